//! NATS server URLs as people write them: one or several comma-separated addresses, with or
//! without a scheme, and perhaps with credentials in them (`nats://user:password@host`,
//! `nats://token@host`).
//!
//! The client library ignores credentials written into a URL, so [`NatsUrl`] takes them out
//! and hands them to the connection options ([`NatsUrl::apply`]); and since a URL is shown in
//! error messages and logs, every text that names one shows it through [`redact_url`] (or
//! [`NatsUrl`]'s `Display`), which never includes a password or a token.

use std::fmt;

use aether_core::{Error, Result};
use async_nats::{ConnectOptions, ServerAddr};

/// What a redacted password or token is replaced with.
const HIDDEN: &str = "***";

/// Credentials written into a NATS URL. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    /// `nats://user:password@host`.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `nats://token@host`: a user part without a password is a token, as in the other NATS
    /// clients and tools.
    Token(String),
}

impl fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &HIDDEN)
                .finish(),
            Self::Token(_) => f.debug_tuple("Token").field(&HIDDEN).finish(),
        }
    }
}

/// One or several comma-separated NATS server addresses, checked, with any credentials written
/// into them taken out (the addresses handed to the client carry none).
///
/// `Display` shows the URL as it was given, with passwords and tokens replaced by `***`.
///
/// ```
/// use aether_nats::{NatsUrl, UrlCredentials};
///
/// let url = NatsUrl::parse("nats://ada:s3cret@127.0.0.1:4222").unwrap();
/// assert_eq!(url.to_string(), "nats://ada:***@127.0.0.1:4222");
/// assert_eq!(url.addrs()[0].as_url_str(), "nats://127.0.0.1:4222");
/// assert!(matches!(url.credentials(), Some(UrlCredentials::UserPassword { .. })));
/// // A malformed address is the caller's mistake, not a server that is down.
/// assert!(matches!(
///     NatsUrl::parse("localhost:x"),
///     Err(aether_core::Error::InvalidInput(_))
/// ));
/// ```
#[derive(Debug, Clone)]
pub struct NatsUrl {
    addrs: Vec<ServerAddr>,
    credentials: Option<UrlCredentials>,
    shown: String,
}

impl NatsUrl {
    /// Parses `url`: comma-separated addresses (`nats://`, `tls://`, `ws://`, `wss://`, or no
    /// scheme for `nats://`), each perhaps with credentials. Several addresses may carry
    /// credentials only if they carry the same ones (the client sends one set to every
    /// server); addresses without any use those of the others.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty list, an address that is not a NATS URL, or
    /// different credentials in different addresses. The message never includes a password
    /// or a token.
    pub fn parse(url: &str) -> Result<Self> {
        let shown = redact_url(url.trim());
        let parts: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(Error::invalid("no NATS URL given"));
        }
        let mut addrs = Vec::with_capacity(parts.len());
        let mut credentials: Option<UrlCredentials> = None;
        for part in parts {
            let invalid = |why: &dyn fmt::Display| {
                Error::invalid(format!("invalid NATS URL {:?}: {why}", redact_url(part)))
            };
            let addr: ServerAddr = part.parse().map_err(|e| invalid(&e))?;
            let found = match (addr.username(), addr.password()) {
                (None, None) => None,
                (None, Some(password)) => Some(UrlCredentials::UserPassword {
                    user: String::new(),
                    password: percent_decode(password).map_err(|e| invalid(&e))?,
                }),
                (Some(user), None) => Some(UrlCredentials::Token(
                    percent_decode(user).map_err(|e| invalid(&e))?,
                )),
                (Some(user), Some(password)) => Some(UrlCredentials::UserPassword {
                    user: percent_decode(user).map_err(|e| invalid(&e))?,
                    password: percent_decode(password).map_err(|e| invalid(&e))?,
                }),
            };
            if let Some(found) = found {
                match &credentials {
                    Some(seen) if *seen != found => {
                        return Err(Error::invalid(format!(
                            "the NATS URLs {shown} carry different credentials; the client sends \
                             one set to every server, so give them once"
                        )))
                    }
                    _ => credentials = Some(found),
                }
            }
            addrs.push(without_credentials(addr).map_err(|e| invalid(&e))?);
        }
        Ok(Self {
            addrs,
            credentials,
            shown,
        })
    }

    /// The addresses, without credentials.
    pub fn addrs(&self) -> &[ServerAddr] {
        &self.addrs
    }

    /// The credentials written into the URL, if any.
    pub fn credentials(&self) -> Option<&UrlCredentials> {
        self.credentials.as_ref()
    }

    /// Whether the URL asks for TLS (a `tls://` or `wss://` address).
    pub fn requires_tls(&self) -> bool {
        self.addrs
            .iter()
            .any(|a| a.tls_required() || a.scheme() == "wss")
    }

    /// `options` with the URL's credentials, if it has any: they replace a user and password
    /// (or a token) set in `options`.
    pub fn apply(&self, options: ConnectOptions) -> ConnectOptions {
        match &self.credentials {
            None => options,
            Some(UrlCredentials::UserPassword { user, password }) => {
                options.user_and_password(user.clone(), password.clone())
            }
            Some(UrlCredentials::Token(token)) => options.token(token.clone()),
        }
    }
}

impl fmt::Display for NatsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::str::FromStr for NatsUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// `url` (one or several comma-separated NATS addresses, with or without a scheme, valid or
/// not) with the password of every `user:password@` replaced by `***`, and a token
/// (`token@`) too: what to show of a URL in a message or a log.
///
/// ```
/// use aether_nats::redact_url;
///
/// assert_eq!(redact_url("nats://ada:s3cret@a:4222, tls://t0k3n@b"), "nats://ada:***@a:4222, tls://***@b");
/// assert_eq!(redact_url("ada:s3cret@localhost:x"), "ada:***@localhost:x");
/// assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
/// ```
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

/// One address: the user information is what comes before the last `@` of the authority
/// (after the scheme, up to the path, query or fragment).
fn redact_one(part: &str) -> String {
    let start = part.find("://").map_or(0, |i| i + 3);
    let rest = &part[start..];
    let end = rest
        .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    let Some(at) = authority.rfind('@') else {
        return part.to_string();
    };
    // Leading spaces of a comma-separated list belong to the part, not to the user.
    let userinfo = &authority[..at];
    let lead = userinfo.len() - userinfo.trim_start().len();
    let shown = match userinfo.trim_start().split_once(':') {
        Some((user, _)) => format!("{}{user}:{HIDDEN}", &userinfo[..lead]),
        None => format!("{}{HIDDEN}", &userinfo[..lead]),
    };
    format!(
        "{}{shown}{}",
        &part[..start],
        &part[start + at..] // from the '@' on
    )
}

/// The address with its user and password removed, so that no message or log of the client
/// can show them.
fn without_credentials(addr: ServerAddr) -> std::io::Result<ServerAddr> {
    if addr.username().is_none() && addr.password().is_none() {
        return Ok(addr);
    }
    let mut url = addr.into_inner();
    let cleared = url.set_password(None).and_then(|()| url.set_username(""));
    if cleared.is_err() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "its credentials cannot be taken out",
        ));
    }
    ServerAddr::from_url(url)
}

/// Decodes `%XX` escapes (a URL's user and password are percent-encoded).
fn percent_decode(text: &str) -> std::result::Result<String, &'static str> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a '%' in its credentials is not followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "its credentials are not UTF-8 once decoded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_the_addresses() {
        let url = NatsUrl::parse("nats://ada:s%40cret@h1:4222,nats://h2:4223").unwrap();
        assert_eq!(
            url.credentials(),
            Some(&UrlCredentials::UserPassword {
                user: "ada".into(),
                password: "s@cret".into()
            })
        );
        let shown: Vec<&str> = url.addrs().iter().map(|a| a.as_url_str()).collect();
        assert_eq!(shown, ["nats://h1:4222", "nats://h2:4223"]);
        assert!(!format!("{url:?}").contains("s%40cret"), "{url:?}");
        assert!(!format!("{url:?}").contains("s@cret"), "{url:?}");
        assert_eq!(url.to_string(), "nats://ada:***@h1:4222,nats://h2:4223");

        let url = NatsUrl::parse("tls://t0k3n@h").unwrap();
        assert_eq!(
            url.credentials(),
            Some(&UrlCredentials::Token("t0k3n".into()))
        );
        assert!(url.requires_tls());
        assert!(!format!("{url:?} {url}").contains("t0k3n"));
        let url = NatsUrl::parse("localhost:4222").unwrap();
        assert_eq!(url.credentials(), None);
        assert!(!url.requires_tls());
    }

    #[test]
    fn malformed_urls_are_invalid_input_and_never_show_a_secret() {
        for bad in [
            "localhost:x",
            "http://h:1",
            " , ",
            "nats://bad host:1",
            "nats://ada:s3cret@host:x",
        ] {
            let e = NatsUrl::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{bad}: {e:?}");
            assert!(!e.is_retryable());
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        let e = NatsUrl::parse("nats://a:pw1@h1,nats://a:pw2@h2").unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        assert!(
            !e.to_string().contains("pw1") && !e.to_string().contains("pw2"),
            "{e}"
        );
        // The same credentials twice are one set.
        assert!(NatsUrl::parse("nats://a:b@h1,nats://a:b@h2,nats://h3").is_ok());
    }

    #[test]
    fn redaction_hides_passwords_and_tokens_only() {
        assert_eq!(redact_url("nats://u:p@h:1/x"), "nats://u:***@h:1/x");
        assert_eq!(redact_url("nats://tok@h"), "nats://***@h");
        assert_eq!(redact_url("u:p@h"), "u:***@h");
        assert_eq!(
            redact_url("nats://u:p@h, nats://v:q@g"),
            "nats://u:***@h, nats://v:***@g"
        );
        assert_eq!(redact_url("nats://h:1"), "nats://h:1");
        assert_eq!(redact_url("nats://u:p:q@h"), "nats://u:***@h");
        assert_eq!(redact_url("nats://u:p@q@h"), "nats://u:***@h");
        assert_eq!(redact_url(""), "");
    }
}
