//! Connecting to NATS: the options every networked command shares, mapped onto
//! `async_nats::ConnectOptions`, failing fast with one clear line instead of retrying forever.

use std::path::PathBuf;
use std::time::Duration;

use aether_nats::backend::{explain_connect_error, JsSubject};
use aether_nats::{ConnectionMonitor, NatsUrl, PermissionWatch, UrlCredentials};
use async_nats::{Client, ConnectErrorKind, ConnectOptions};
use clap::Args;

use crate::error::{chain, with_hint, CliError, CliResult};

/// The server used when neither `--nats` nor `NATS_URL` says otherwise.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How long the first connection may take before the command gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Authentication and TLS options (shared by every networked command).
#[derive(Debug, Clone, Default, Args)]
pub struct AuthArgs {
    /// NATS credentials file (JWT and NKey seed), as made by `nsc`.
    #[arg(long, value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// User name (with --password).
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    /// Password (with --user).
    #[arg(long, requires = "user", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Authentication token.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) to trust; also requires TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

/// Where and how to connect (shared by every networked command).
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// NATS server URL (several: comma-separated).
    #[arg(long, env = "NATS_URL", hide_env_values = true, default_value = DEFAULT_NATS_URL, value_name = "URL")]
    pub nats: String,
    /// Authentication and TLS.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Watches the events of the connection made by [`connect`](Self::connect), so the
    /// command can say what the server refused.
    #[arg(skip)]
    pub monitor: ConnectionMonitor,
}

impl ConnectArgs {
    /// Connects (see [`connect`]), with [`monitor`](Self::monitor) watching the connection.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn connect(&self) -> CliResult<Client> {
        connect_watched(&self.nats, &self.auth, Some(&self.monitor), None).await
    }

    /// As [`connect`](Self::connect), with each subscription's client-side buffer holding at
    /// most `capacity` messages (the client's default is 65 536). A long-running reader that
    /// may fall behind (the dashboard's live tails) bounds its memory this way: a full buffer
    /// drops messages, which the bus reports as lag.
    ///
    /// # Errors
    /// As [`connect`].
    pub async fn connect_with_capacity(&self, capacity: usize) -> CliResult<Client> {
        connect_watched(&self.nats, &self.auth, Some(&self.monitor), Some(capacity)).await
    }

    /// The permission violations reported on the connection made by
    /// [`connect`](Self::connect).
    pub fn permissions(&self) -> &PermissionWatch {
        self.monitor.permissions()
    }
}

/// Runs a command's work, failing it with one clear line as soon as the server reports refusing
/// it something: NATS never answers a refused request, so without this the command would wait
/// for its timeout and report a vague failure.
///
/// # Errors
/// The work's own error, or the refusal.
pub async fn refusals_fail<T>(
    permissions: &PermissionWatch,
    work: impl std::future::Future<Output = CliResult<T>>,
) -> CliResult<T> {
    let started = tokio::time::Instant::now();
    let refused = permissions
        .refused_during(
            started,
            |_, subject| {
                // Replay consumers are deleted on a best-effort basis; refusing that harms
                // nothing.
                !JsSubject::parse(subject).is_some_and(|s| s.is_consumer_delete())
            },
            work,
        )
        .await;
    match refused {
        Ok(result) => result,
        Err(refused) => Err(CliError::new(format!(
            "permission denied: the server refused {} to {:?} for this user (check its NATS permissions)",
            refused.operation, refused.subject
        ))),
    }
}

/// Checks every comma-separated address of `url` and takes out the credentials written into
/// them (`nats://user:password@host`, `nats://token@host`), which [`connect`] then uses.
///
/// # Errors
/// A one-line message naming the address that is not a NATS URL (its password or token
/// hidden), or saying that the addresses carry different credentials.
pub fn parse_urls(url: &str) -> CliResult<NatsUrl> {
    NatsUrl::parse(url).map_err(|e| match e {
        aether_core::Error::InvalidInput(message) if message.starts_with("no NATS URL") => {
            CliError::new("no NATS URL given (use --nats URL)")
        }
        aether_core::Error::InvalidInput(message) => CliError::new(message),
        other => CliError::from(other),
    })
}

/// Builds the client options from `auth`: credentials file, user and password, token, CA
/// certificate (which also requires TLS), and a short connect timeout with a bounded number
/// of reconnects.
///
/// # Errors
/// An unreadable credentials or CA file.
pub async fn options(auth: &AuthArgs) -> CliResult<ConnectOptions> {
    let mut options = match &auth.creds {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| {
                CliError::new(format!(
                    "cannot read credentials file {}: {e}",
                    path.display()
                ))
            })?,
        None => ConnectOptions::new(),
    };
    if let (Some(user), Some(password)) = (&auth.user, &auth.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &auth.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &auth.tls_ca {
        if !ca.is_file() {
            return Err(CliError::new(format!(
                "CA certificate {} does not exist or is not a file",
                ca.display()
            )));
        }
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    Ok(options
        .name("aether-cli")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(Duration::from_secs(5)))
        // A command that lost its server should fail rather than wait forever.
        .max_reconnects(Some(10)))
}

/// Connects to `url` with `auth`, within [`CONNECT_TIMEOUT`].
///
/// # Errors
/// A one-line message: bad URL, unreachable server, refused credentials, TLS failure.
pub async fn connect(url: &str, auth: &AuthArgs) -> CliResult<Client> {
    connect_watched(url, auth, None, None).await
}

/// As [`connect`], with each subscription's client-side buffer bounded to `capacity`
/// messages (see [`ConnectArgs::connect_with_capacity`]).
///
/// # Errors
/// As [`connect`].
pub async fn connect_with_capacity(
    url: &str,
    auth: &AuthArgs,
    capacity: usize,
) -> CliResult<Client> {
    connect_watched(url, auth, None, Some(capacity)).await
}

async fn connect_watched(
    url: &str,
    auth: &AuthArgs,
    monitor: Option<&ConnectionMonitor>,
    capacity: Option<usize>,
) -> CliResult<Client> {
    let url = parse_urls(url)?;
    if url.credentials().is_some()
        && (auth.creds.is_some() || auth.user.is_some() || auth.token.is_some())
    {
        return Err(CliError::new(format!(
            "the NATS URL {url} carries credentials and --creds, --user or --token (or \
             NATS_TOKEN) gives others: give them once"
        )));
    }
    let mut options = url.apply(options(auth).await?);
    if let Some(monitor) = monitor {
        options = monitor.install(options);
    }
    if let Some(capacity) = capacity {
        options = options.subscription_capacity(capacity.max(1));
    }
    // The client's own timeout covers each attempt; this one covers DNS and the handshake
    // with a server that accepts the connection and then says nothing.
    match tokio::time::timeout(
        CONNECT_TIMEOUT + Duration::from_secs(1),
        options.connect(url.addrs()),
    )
    .await
    {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(describe_connect_error(&url, auth, &e)),
        Err(_) => Err(CliError::new(format!(
            "cannot reach NATS at {url}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// A failed connection as one line. The URL is shown with its password or token hidden.
fn describe_connect_error(
    url: &NatsUrl,
    auth: &AuthArgs,
    e: &async_nats::ConnectError,
) -> CliError {
    // The cause with its chain, and what it usually means (a refused port, a server that
    // does not speak TLS).
    let detail = explain_connect_error(e);
    let not_tls = detail.starts_with("the server does not speak TLS");
    match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            let used = if auth.creds.is_some() {
                "the credentials file"
            } else if matches!(url.credentials(), Some(UrlCredentials::UserPassword { .. })) {
                "the user and password in the URL"
            } else if matches!(url.credentials(), Some(UrlCredentials::Token(_))) {
                "the token in the URL"
            } else if auth.user.is_some() {
                "the user and password"
            } else if auth.token.is_some() {
                "the token"
            } else {
                "no credentials (try --user/--password, --token or --creds)"
            };
            CliError::new(format!(
                "NATS at {url} refused the connection: authorization failed with {used}"
            ))
        }
        ConnectErrorKind::TimedOut => CliError::new(format!(
            "cannot reach NATS at {url}: timed out after {}s",
            CONNECT_TIMEOUT.as_secs()
        )),
        _ if not_tls => CliError::new(format!("cannot connect to NATS at {url}: {detail}")),
        ConnectErrorKind::Tls | ConnectErrorKind::Io if auth.tls_ca.is_some() => {
            CliError::new(format!(
                "TLS with NATS at {url} failed: {detail} (does the server have TLS enabled, \
                 signed by that CA?)"
            ))
        }
        _ if detail.to_lowercase().contains("certificate") => CliError::new(format!(
            "TLS with NATS at {url} failed: {detail} (pass the CA that signed the server's \
             certificate with --tls-ca)"
        )),
        ConnectErrorKind::Tls => CliError::new(format!("TLS with NATS at {url} failed: {detail}")),
        ConnectErrorKind::ServerParse => {
            CliError::new(format!("invalid NATS URL \"{url}\": {detail}"))
        }
        _ => CliError::new(format!("cannot connect to NATS at {url}: {detail}")),
    }
}

/// A JetStream failure while doing `what`, with a hint when JetStream seems to be off.
pub(crate) fn jetstream_hint(what: &str, e: &(dyn std::error::Error + 'static)) -> CliError {
    CliError::new(with_hint(format!("{what}: {}", chain(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            parse_urls("nats://a:1, nats://b:2").unwrap().addrs().len(),
            2
        );
        assert!(parse_urls("localhost:4222").is_ok());
        let e = parse_urls("http://x:1").unwrap_err();
        assert!(e.message().starts_with("invalid NATS URL"), "{e}");
        let e = parse_urls(" , ").unwrap_err();
        assert!(e.message().contains("--nats"), "{e}");
        let e = parse_urls("nats://ada:s3cret@h:x").unwrap_err();
        assert!(e.message().starts_with("invalid NATS URL"), "{e}");
        assert!(!e.message().contains("s3cret"), "{e}");
    }

    #[tokio::test]
    async fn credentials_in_the_url_and_in_flags_are_refused() {
        let auth = AuthArgs {
            token: Some("t".into()),
            ..AuthArgs::default()
        };
        let e = connect("nats://ada:s3cret@127.0.0.1:1", &auth)
            .await
            .unwrap_err();
        assert!(e.message().contains("give them once"), "{e}");
        assert!(!e.message().contains("s3cret"), "{e}");
    }
}
