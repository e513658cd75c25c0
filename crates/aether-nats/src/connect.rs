//! A NATS connection with its event monitor, and what is done with the connection itself:
//! sorting a failed connect, and the round trip that proves the server processed what was sent.

use std::time::Duration;

use aether_core::{Error, Result};
use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use futures::StreamExt;

use crate::errors::timeout_error;
use crate::url::{redact_url, NatsUrl};
use crate::{ConnectionMonitor, Operation, PermissionWatch};

/// Sorts a failed connection to `url`: refused credentials are [`Error::PermissionDenied`]
/// (retrying cannot help), an address the client cannot parse [`Error::InvalidInput`],
/// anything else [`Error::Unavailable`]. The client's error is kept as the source, and the
/// message says what went wrong (see [`explain_connect_error`]) with the URL's password or
/// token hidden ([`redact_url`]), so that printing the error alone tells the whole story.
pub fn connect_error(url: &str, err: async_nats::ConnectError) -> Error {
    let url = redact_url(url.trim());
    let context = format!(
        "connecting to NATS at {url} failed: {}",
        explain_connect_error(&err)
    );
    match err.kind() {
        async_nats::ConnectErrorKind::AuthorizationViolation
        | async_nats::ConnectErrorKind::Authentication => Error::PermissionDenied {
            context,
            source: Box::new(err),
        },
        async_nats::ConnectErrorKind::ServerParse => Error::InvalidInput(context),
        _ => Error::unavailable(context, err),
    }
}

/// What went wrong in a failed connection, in words for the person at the terminal: the
/// client's error with its causes, and what it usually means when that is known. A TLS
/// handshake answered in plain text ("received corrupt message") says that the server does
/// not speak TLS; a refused TCP connection, that nothing listens on that address.
pub fn explain_connect_error(err: &async_nats::ConnectError) -> String {
    let detail = error_chain(err);
    let lower = detail.to_ascii_lowercase();
    if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
        format!(
            "the server does not speak TLS ({detail}): a tls:// URL or a required TLS connection \
             to a plain-text server? Use nats:// or enable TLS on the server"
        )
    } else if refused(err) {
        format!("{detail} (is the server running, on this address and port?)")
    } else {
        detail
    }
}

/// Whether the connection was refused at the TCP level.
fn refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// The error and its sources, joined with `: `, skipping a source whose text the previous
/// message already contains (the client's errors print their source themselves): the one line
/// that says what failed and why, for logs and the command line.
///
/// ```
/// let io = std::io::Error::other("connection refused");
/// let e = aether_core::Error::unavailable("connecting to NATS", io);
/// assert_eq!(
///     aether_nats::error_chain(&e),
///     "connecting to NATS: backend unavailable: connection refused"
/// );
/// ```
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A NATS client together with the one [`ConnectionMonitor`] watching its events: what the
/// event store, the bus and the command-line tools share when they share a connection.
///
/// Cloning is cheap; clones are the same connection.
///
/// ```no_run
/// # async fn run() -> aether_core::Result<()> {
/// let conn = aether_nats::Connection::connect(
///     "nats://127.0.0.1:4222",
///     async_nats::ConnectOptions::new(),
/// )
/// .await?;
/// let _sub = conn.client().subscribe("orders.>").await
///     .map_err(|e| aether_core::Error::unavailable("subscribing", e))?;
/// // The server now has the subscription: nothing published from here on is missed.
/// conn.round_trip(std::time::Duration::from_secs(5)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Connection {
    client: Client,
    monitor: ConnectionMonitor,
}

impl Connection {
    /// Connects to `url` (one or several comma-separated addresses, see [`NatsUrl`]) with
    /// `options`, a fresh monitor installed as the event callback (replacing any set in
    /// `options`). Credentials written into the URL (`nats://user:password@host`,
    /// `nats://token@host`) are used, in place of a user and password or token in `options`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed URL, [`Error::PermissionDenied`] when the
    /// server refuses the credentials, [`Error::Unavailable`] when it cannot be reached. No
    /// message shows the URL's password or token.
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Self> {
        let url = NatsUrl::parse(url)?;
        let monitor = ConnectionMonitor::new();
        let client = monitor
            .install(url.apply(options))
            .connect(url.addrs())
            .await
            .map_err(|e| connect_error(&url.to_string(), e))?;
        Ok(Self { client, monitor })
    }

    /// A connection made elsewhere whose client was created with `monitor`
    /// ([`ConnectionMonitor::install`]). With a monitor that was never installed, refusals
    /// and connection events go unseen.
    pub fn new(client: Client, monitor: ConnectionMonitor) -> Self {
        Self { client, monitor }
    }

    /// The NATS client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The monitor of the connection's events.
    pub fn monitor(&self) -> &ConnectionMonitor {
        &self.monitor
    }

    /// The permission violations reported on the connection (its monitor's).
    pub fn permissions(&self) -> &PermissionWatch {
        self.monitor.permissions()
    }

    /// A JetStream context on the connection.
    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client.clone())
    }

    /// [`round_trip`] on this connection.
    ///
    /// # Errors
    /// As [`round_trip`].
    pub async fn round_trip(&self, timeout: Duration) -> Result<()> {
        round_trip(&self.client, timeout, "a NATS round trip").await
    }
}

impl From<Client> for Connection {
    /// A connection on a client made without a monitor: refusals and connection events go
    /// unseen.
    fn from(client: Client) -> Self {
        Self::new(client, ConnectionMonitor::new())
    }
}

/// Waits until the server has processed everything `client` sent before the call (a
/// subscription in particular), at most `timeout`.
///
/// `Client::flush` only empties the client's socket buffer; it proves nothing about the server.
/// The server handles a connection's operations in order, so a message the client sends to
/// itself and gets back proves that every earlier operation took effect; a refusal of one of
/// them was also sent before that message (though the client hands it to the event callback on
/// another task).
///
/// # Errors
/// [`Error::Unavailable`] with `context` when the round trip fails or times out,
/// [`Error::Closed`] when the connection is closed.
pub async fn round_trip(client: &Client, timeout: Duration, context: &str) -> Result<()> {
    let probe = async {
        let inbox = client.new_inbox();
        let mut sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| Error::unavailable(context, e))?;
        client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| Error::unavailable(context, e))?;
        match sub.next().await {
            Some(_) => {
                // Explicitly, so the probe is gone before later commands are processed.
                if let Err(e) = sub.unsubscribe().await {
                    tracing::debug!(error = %e, "unsubscribing a round-trip probe");
                }
                Ok(())
            }
            None => Err(Error::Closed("NATS connection".into())),
        }
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(r) => r,
        Err(_) => Err(timeout_error(context)),
    }
}

/// Subscribes `client` to `subject` and returns once the server has processed the
/// subscription (nothing published afterwards is missed), with the instant it subscribed; or
/// with [`Error::PermissionDenied`] naming the subject when the server refused it, as
/// `permissions` (the watch of a monitor installed on this client) reports.
///
/// The server handles a connection's operations in order and reports a refused subscription
/// at once, so the refusal (if any) is read before the first round trip's answer. The client
/// hands it to the event callback on another task, though: a second round trip gives that task
/// its turn before the answer is trusted. On a heavily loaded machine that task can still run
/// later; callers that keep the subscription watch [`PermissionWatch::changes`] for refusals
/// that arrive afterwards.
///
/// # Errors
/// [`Error::PermissionDenied`] as above; [`Error::Unavailable`] when the subscription or the
/// round trips fail or take longer than `timeout`.
pub async fn subscribe_confirmed(
    client: &Client,
    permissions: &PermissionWatch,
    subject: &str,
    timeout: Duration,
) -> Result<(async_nats::Subscriber, tokio::time::Instant)> {
    let context = format!("subscribing to {subject}");
    let refused = |op: Operation, s: &str| op == Operation::Subscribe && s == subject;
    let since = tokio::time::Instant::now();
    let mut sub = client
        .subscribe(subject.to_string())
        .await
        .map_err(|e| Error::unavailable(&context, e))?;
    let confirmed = permissions
        .refused_during(since, refused, async {
            round_trip(client, timeout, &context).await?;
            tokio::task::yield_now().await;
            round_trip(client, timeout, &context).await
        })
        .await;
    let refusal = match confirmed {
        Ok(result) => match permissions.find_since(since, refused) {
            Some(v) => Some(v),
            None => {
                result?;
                None
            }
        },
        Err(v) => Some(v),
    };
    match refusal {
        None => Ok((sub, since)),
        Some(v) => {
            if let Err(e) = sub.unsubscribe().await {
                tracing::debug!(error = %e, "unsubscribing a refused subscription");
            }
            Err(v.to_error(context))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::{ConnectError, ConnectErrorKind};

    #[test]
    fn refused_credentials_are_not_retryable() {
        let e = connect_error(
            "nats://x",
            ConnectError::new(ConnectErrorKind::AuthorizationViolation),
        );
        assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("nats://x"));
        let e = connect_error("nats://x", ConnectError::new(ConnectErrorKind::Io));
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(e.is_retryable());
    }

    #[test]
    fn the_message_names_the_cause() {
        let refused = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        let e = connect_error(
            "nats://127.0.0.1:1",
            ConnectError::with_source(ConnectErrorKind::Io, refused),
        );
        let text = e.to_string();
        assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
        assert!(text.contains("Connection refused"), "{text}");
        assert!(text.contains("is the server running"), "{text}");

        let corrupt = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received corrupt message of type InvalidContentType",
        );
        let e = connect_error(
            "tls://127.0.0.1:4222",
            ConnectError::with_source(ConnectErrorKind::Io, corrupt),
        );
        let text = e.to_string();
        assert!(text.contains("does not speak TLS"), "{text}");
        assert!(!text.contains("is the server running"), "{text}");
    }

    #[test]
    fn a_malformed_address_is_invalid_input_and_secrets_are_hidden() {
        let e = connect_error(
            "nats://ada:s3cret@h:x",
            ConnectError::new(ConnectErrorKind::ServerParse),
        );
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        assert!(!e.is_retryable());
        let e = connect_error(
            "nats://ada:s3cret@h:1",
            ConnectError::new(ConnectErrorKind::Io),
        );
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(e.to_string().contains("nats://ada:***@h:1"), "{e}");
    }
}
