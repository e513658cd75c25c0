//! Who may read the dashboard: the access token, the session cookie derived from it, and the
//! `Host` check that keeps pages of other sites out when no token is set.
//!
//! - With a token, a request carries it as `Authorization: Bearer <token>` (scripts,
//!   Prometheus), or once as `?token=<token>` (percent-encoded like any query value): that
//!   answer is a redirect to the same address without the token, setting a session cookie.
//!   The cookie holds an HMAC-SHA-256 of the token under a key drawn at start, never the token:
//!   browsers send cookies of `127.0.0.1` to every port of it, so another local service sees
//!   only a value that is worthless anywhere else and after a restart. Its name carries the
//!   port, so two dashboards on one host do not overwrite each other's.
//! - Without a token, only requests naming this host by a loopback name or by the address the
//!   connection came in on (and its port) get through: a page of another site that rebinds its
//!   DNS name to 127.0.0.1 sends its own name as `Host`, and is refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::api::Shared;
use crate::error::{CliError, CliResult};

/// Fewest characters an access token may have: short ones are guessed.
pub const MIN_TOKEN_LEN: usize = 16;
/// Most characters an access token may have (it travels in a header and a query).
pub const MAX_TOKEN_LEN: usize = 256;

/// The prefix of the session cookie's name; the port follows it.
const SESSION_COOKIE: &str = "aether_ui_session";

/// The address a connection came in on, put on each of its requests by
/// [`serve`](super::serve) so that the `Host` check and the cookie's name know the port.
#[derive(Debug, Clone, Copy)]
pub(super) struct LocalAddr(pub(super) SocketAddr);

/// Checks an access token: [`MIN_TOKEN_LEN`] to [`MAX_TOKEN_LEN`] visible ASCII characters (no
/// spaces, no control characters), so that it survives a header, a query and a shell, and a
/// mistyped one fails at start rather than locking everyone out.
///
/// # Errors
/// Which rule the token breaks; the message never contains the token.
pub fn validate_token(token: &str) -> CliResult<()> {
    if token.is_empty() {
        return Err(CliError::new(
            "the dashboard's access token is empty (--ui-token or AETHER_UI_TOKEN): set one, \
             or unset the variable to serve loopback without a token",
        ));
    }
    if let Some((i, c)) = token
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_graphic())
    {
        let what = if c == ' ' {
            "a space".to_string()
        } else if c.is_ascii_control() {
            format!("a control character (U+{:04X})", u32::from(c))
        } else {
            format!("a non-ASCII character (U+{:04X})", u32::from(c))
        };
        return Err(CliError::new(format!(
            "the dashboard's access token has {what} at position {}: use visible ASCII \
             characters only (for example the output of `openssl rand -hex 16`)",
            i + 1
        )));
    }
    let len = token.len();
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&len) {
        return Err(CliError::new(format!(
            "the dashboard's access token has {len} characters: it must have \
             {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} (for example the output of `openssl rand -hex 16`)"
        )));
    }
    Ok(())
}

/// The access token and what is derived from it.
pub(super) struct Access {
    token: Option<String>,
    /// The session cookie's value: an HMAC of the token under a key drawn at start.
    session: Option<String>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Checks `token` and derives the session value.
    ///
    /// # Errors
    /// A token [`validate_token`] refuses; the system refusing randomness for the key.
    pub(super) fn new(token: Option<String>) -> CliResult<Self> {
        let Some(token) = token else {
            return Ok(Self {
                token: None,
                session: None,
            });
        };
        validate_token(&token)?;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| {
            CliError::new(format!(
                "drawing the dashboard's session key from the system: {e}"
            ))
        })?;
        let session = hex(&hmac_sha256(&key, token.as_bytes()));
        Ok(Self {
            token: Some(token),
            session: Some(session),
        })
    }
}

/// Lets a request through when it may read the dashboard (see the module's docs); answers a
/// valid `?token=` with a redirect that sets the session cookie.
pub(super) async fn authorize(
    State(state): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let local = request.extensions().get::<LocalAddr>().map(|l| l.0);
    let access = &state.access;
    let (Some(token), Some(session)) = (access.token.as_deref(), access.session.as_deref()) else {
        return match host_allowed(request.headers(), local) {
            Ok(()) => next.run(request).await,
            Err(host) => refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "403: this dashboard has no access token, so it answers only requests for \
                     localhost or its own IP address and port (this one was for {host:?}); a page \
                     of another site cannot read it. Open it as http://127.0.0.1:<port>/, or \
                     start it with --ui-token to serve other names.\n"
                ),
            ),
        };
    };
    let cookie_name = cookie_name(request.headers(), local);
    match query_token(request.uri()) {
        Some((Some(given), rest)) if same(&given, token) => {
            login_redirect(request.uri().path(), &rest, &cookie_name, session)
        }
        Some(_) => refuse(
            StatusCode::UNAUTHORIZED,
            "401: wrong access token: open the dashboard with ?token=<its token>\n",
        ),
        None if carries(request.headers(), token, &cookie_name, session) => next.run(request).await,
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "401: this dashboard needs its access token: open it with ?token=<token> \
             (percent-encoded), or send Authorization: Bearer <token>\n",
        ),
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        message.to_string(),
    )
        .into_response()
}

/// A redirect to `path` with the other query values, setting the session cookie: the token
/// leaves the address bar, the history and any `Referer`.
fn login_redirect(path: &str, rest: &str, cookie_name: &str, session: &str) -> Response {
    // One leading slash: `//host/...` would send the browser to another host.
    let path = format!("/{}", path.trim_start_matches('/'));
    let location = if rest.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{rest}")
    };
    let cookie = format!("{cookie_name}={session}; Path=/; HttpOnly; SameSite=Strict");
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
    )
        .into_response();
    // Both come from the request's own path and a hex digest; a value a header cannot carry
    // only leaves the redirect without it.
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The `token` value of the query, percent-decoded, with the rest of the query as it came
/// (`None`: no `token` in the query; `Some((None, _))`: one that does not decode).
fn query_token(uri: &Uri) -> Option<(Option<String>, String)> {
    let query = uri.query()?;
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_component(k).as_deref() == Some("token") {
            token = Some(decode_component(v));
        } else {
            rest.push(pair);
        }
    }
    token.map(|t| (t, rest.join("&")))
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a space, `%XX` a byte;
/// `None` for a broken escape or bytes that are not UTF-8.
fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16))?;
                let lo = bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16))?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The session cookie's name: with the port of the connection (or of the `Host` header when
/// the router is served by something else).
fn cookie_name(headers: &HeaderMap, local: Option<SocketAddr>) -> String {
    let port = local
        .map(|l| l.port())
        .or_else(|| host_header(headers).and_then(|h| split_host(h).1));
    match port {
        Some(p) => format!("{SESSION_COOKIE}_{p}"),
        None => SESSION_COOKIE.to_string(),
    }
}

/// Whether the headers carry the token as a bearer token, or the session value in the cookie.
fn carries(headers: &HeaderMap, token: &str, cookie_name: &str, session: &str) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split_once(' '))
        .any(|(scheme, v)| scheme.eq_ignore_ascii_case("bearer") && same(v.trim(), token));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .any(|(k, v)| k == cookie_name && same(v, session));
    bearer || cookie
}

fn host_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|v| v.to_str().ok())
}

/// `host[:port]` or `[v6][:port]` split into the host and the port (`None`: no port, or one
/// that does not parse).
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, port.parse().ok()),
        None => (host, None),
    }
}

/// Whether a request without a token may be answered: its `Host` names a loopback name or IP,
/// or the IP the connection came in on, with the connection's port (port not checked when the
/// connection is unknown). `Err` carries the refused `Host`.
fn host_allowed(headers: &HeaderMap, local: Option<SocketAddr>) -> Result<(), String> {
    let Some(host) = host_header(headers) else {
        return Err(String::new());
    };
    let (name, port) = split_host(host);
    let name_ok = if let Ok(ip) = name.parse::<IpAddr>() {
        // A dual-stack listener sees IPv4 clients at IPv4-mapped IPv6 addresses.
        let ip = ip.to_canonical();
        ip.is_loopback() || local.is_some_and(|l| l.ip().to_canonical() == ip)
    } else {
        let name = name.strip_suffix('.').unwrap_or(name);
        name.eq_ignore_ascii_case("localhost")
    };
    // Without a port the browser means 80.
    let port_ok = local.is_none_or(|l| port.unwrap_or(80) == l.port());
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(host.chars().take(200).collect())
    }
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// HMAC-SHA-256 (RFC 2104) over the SHA-256 already in the tree.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_pad = block.map(|b| b ^ 0x36);
    let outer_pad = block.map(|b| b ^ 0x5c);
    let inner = Sha256::new()
        .chain_update(inner_pad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(outer_pad)
        .chain_update(inner)
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 1 and 2 of RFC 4231.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn tokens_must_be_visible_ascii_of_a_reasonable_length() {
        assert!(validate_token("0123456789abcdef").is_ok());
        assert!(validate_token("p%&#;+=x!\"'()*,-./:<>?@[]^`{|}~").is_ok());
        let e = validate_token("").unwrap_err().message().to_string();
        assert!(e.contains("empty"), "{e}");
        let e = validate_token("short").unwrap_err().message().to_string();
        assert!(e.contains("5 characters"), "{e}");
        let e = validate_token("0123456789 abcdef")
            .unwrap_err()
            .message()
            .to_string();
        assert!(e.contains("a space at position 11"), "{e}");
        let e = validate_token("0123456789abcdéf")
            .unwrap_err()
            .message()
            .to_string();
        assert!(e.contains("non-ASCII"), "{e}");
        assert!(!e.contains("0123456789"), "the token is never printed: {e}");
        assert!(validate_token(&"x".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }

    #[test]
    fn query_values_are_percent_decoded_and_the_rest_kept() {
        let uri: Uri = "/x?a=1&token=p%25%26%23%3B+b&c=%3E".parse().unwrap();
        let (token, rest) = query_token(&uri).unwrap();
        assert_eq!(token.as_deref(), Some("p%&#; b"));
        assert_eq!(rest, "a=1&c=%3E");
        let uri: Uri = "/x?tok%65n=abc".parse().unwrap();
        assert_eq!(query_token(&uri).unwrap().0.as_deref(), Some("abc"));
        let uri: Uri = "/x?token=%zz".parse().unwrap();
        assert_eq!(query_token(&uri).unwrap().0, None);
        let uri: Uri = "/x?token=%FF".parse().unwrap();
        assert_eq!(query_token(&uri).unwrap().0, None);
        let uri: Uri = "/x?a=1".parse().unwrap();
        assert!(query_token(&uri).is_none());
    }

    #[test]
    fn the_login_redirect_stays_on_this_host() {
        let r = login_redirect("//evil.example/x", "a=1", "c", "v");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/evil.example/x?a=1");
        assert_eq!(
            r.headers()[header::SET_COOKIE],
            "c=v; Path=/; HttpOnly; SameSite=Strict"
        );
    }

    #[test]
    fn the_bearer_header_carries_the_token_and_the_cookie_only_the_session_value() {
        let name = "aether_ui_session_8484";
        let mut h = HeaderMap::new();
        assert!(!carries(&h, "s3cret", name, "abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret"),
        );
        assert!(carries(&h, "s3cret", name, "abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; aether_ui_session_8484=abc"),
        );
        assert!(carries(&h, "s3cret", name, "abc"));
        assert!(!carries(&h, "s3cret", "aether_ui_session_9000", "abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("aether_ui_session_8484=s3cret"),
        );
        assert!(
            !carries(&h, "s3cret", name, "abc"),
            "the raw token is no session"
        );
    }

    #[test]
    fn without_a_token_only_loopback_names_and_the_local_address_pass() {
        let local: SocketAddr = "127.0.0.1:8484".parse().unwrap();
        let any: SocketAddr = "192.168.1.5:8484".parse().unwrap();
        let check = |host: &str, local: Option<SocketAddr>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            host_allowed(&h, local).is_ok()
        };
        assert!(check("127.0.0.1:8484", Some(local)));
        assert!(check("localhost:8484", Some(local)));
        assert!(check("LOCALHOST.:8484", Some(local)));
        assert!(check("[::1]:8484", Some(local)));
        assert!(check("127.0.0.2:8484", Some(local)));
        assert!(!check("127.0.0.1:9999", Some(local)), "another port");
        assert!(!check("127.0.0.1", Some(local)), "port 80 implied");
        assert!(!check("evil.example:8484", Some(local)));
        assert!(!check("localhost.evil.example:8484", Some(local)));
        assert!(
            check("192.168.1.5:8484", Some(any)),
            "the address it listens on"
        );
        assert!(!check("192.168.1.6:8484", Some(any)));
        let mapped: SocketAddr = "[::ffff:192.168.1.5]:8484".parse().unwrap();
        assert!(
            check("192.168.1.5:8484", Some(mapped)),
            "dual-stack listener"
        );
        assert!(check("localhost:1234", None), "port unknown: not checked");
        assert!(!check("evil.example", None));
        assert!(host_allowed(&HeaderMap::new(), Some(local)).is_err());
    }
}
