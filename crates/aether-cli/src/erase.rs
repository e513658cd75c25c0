//! `aether erase SUBJECT --yes`: erases a data subject for good by deleting its key from the
//! namespace's key bucket (`AETHER_KEYS[_<namespace>]`, see [`aether_privacy::NatsKeyStore`]).
//! From then on every personal field of the subject, in every event and snapshot, reads as
//! erased; the events themselves stay as they were.
//!
//! Also how the tools show personal data ([`ShownKeys`]): a sealed field of a subject that was
//! erased shows as erased, any other sealed field stays sealed. No tool ever opens a sealed
//! field or shows a key.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_core::personal::{holds_personal, validate_subject};
use aether_core::{Error, Event};
use aether_nats::Connection;
use aether_privacy::{Erasure, KeyStore, KeyStoreConfig, NatsKeyStore};
use clap::Args;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::connect::ConnectArgs;
use crate::error::{chain, with_hint, CliError, CliResult};
use crate::output::escape;

/// Arguments of `aether erase`.
#[derive(Debug, Clone, Args)]
pub struct EraseArgs {
    /// The data subject's id, as the application names it in its personal fields.
    pub subject: String,
    /// Confirm: an erasure cannot be undone.
    #[arg(long)]
    pub yes: bool,
    /// Namespace of the store whose keys to use (the key bucket is `AETHER_KEYS_<NS>`;
    /// `AETHER_KEYS` without a namespace).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The key bucket configuration of a namespace, as the application's key store has it by
/// default.
pub fn key_store_config(namespace: Option<&str>) -> KeyStoreConfig {
    match namespace {
        Some(ns) => KeyStoreConfig::default().namespace(ns),
        None => KeyStoreConfig::default(),
    }
}

/// Whether a key store could have a bucket of this name: letters, digits, `_` and `-` (what
/// [`NatsKeyStore`] accepts). A namespace whose bucket name is not one has no key bucket.
fn possible_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Runs `aether erase`.
///
/// # Errors
/// A malformed subject id, no `--yes`, a namespace without a key bucket, a subject the bucket
/// never held a key for, the server's failures. Nothing is written then, except by an
/// erasure the server failed to finish, which the same command finishes when run again.
pub async fn run(args: EraseArgs) -> CliResult<()> {
    // Debug-quoted in the error (which escapes what is left); escaped for stdout.
    validate_subject(&args.subject)
        .map_err(|e| CliError::new(format!("invalid data subject id {:?}: {e}", args.subject)))?;
    let who = escape(&args.subject).into_owned();
    let config = key_store_config(args.namespace.as_deref());
    let bucket = config.bucket_name();
    if !args.yes {
        return Err(CliError::new(format!(
            "erasing data subject {who} would delete its key from key bucket {bucket} for \
             good: its personal fields in every event and snapshot could never be read again. \
             Pass --yes to erase it"
        )));
    }
    let client = args.connect.connect().await?;
    let connection = Connection::new(client, args.connect.monitor.clone());
    let keys = match NatsKeyStore::open_existing(&connection, config).await {
        Ok(Some(keys)) => keys,
        Ok(None) => {
            return Err(CliError::new(format!(
                "no key bucket {bucket}: no personal data was ever sealed {}, so there is \
                 nothing to erase (check --namespace)",
                match &args.namespace {
                    Some(ns) => format!("in namespace {ns:?}"),
                    None => "without a namespace".to_string(),
                }
            )))
        }
        Err(Error::InvalidInput(m)) => return Err(CliError::new(m)),
        Err(e) => return Err(e.into()),
    };
    match keys.erase(&args.subject).await {
        Ok(Erasure::Erased) => println!("erased data subject {who}"),
        Ok(Erasure::AlreadyErased) => println!("data subject {who} was already erased"),
        Err(Error::NotFound(_)) => {
            return Err(CliError::new(format!(
                "data subject {who} has no key in key bucket {bucket}: nothing to erase (check \
                 the id and --namespace: a subject with personal data on record has a key)"
            )))
        }
        Err(Error::InvalidInput(m)) => return Err(CliError::new(m)),
        Err(e) => {
            return Err(CliError::new(format!(
                "erasing data subject {who}: {} (an erasure is finished by running the same \
                 command again)",
                with_hint(chain(&e))
            )))
        }
    }
    Ok(())
}

/// The key bucket a tool checks erasures in before it shows personal data, opened without
/// creating anything; see [`redact`](Self::redact).
#[derive(Debug, Clone)]
pub struct ShownKeys {
    keys: Arc<NatsKeyStore>,
}

impl ShownKeys {
    /// The key bucket of `namespace`, if it exists: `None` when it does not (nothing was ever
    /// sealed there, so there is nothing to redact), or when the namespace cannot name a
    /// bucket at all.
    ///
    /// # Errors
    /// A bucket that exists but cannot be opened (not one Aether created), the server's
    /// failures.
    pub async fn open(
        connection: &Connection,
        namespace: Option<&str>,
    ) -> aether_core::Result<Option<Self>> {
        let config = key_store_config(namespace);
        if !possible_bucket_name(&config.bucket_name()) {
            return Ok(None);
        }
        Ok(NatsKeyStore::open_existing(connection, config)
            .await?
            .map(|keys| Self {
                keys: Arc::new(keys),
            }))
    }

    /// The key bucket's name.
    pub fn bucket_name(&self) -> &str {
        self.keys.bucket_name()
    }

    /// Shows `event`'s personal fields as a tool may ([`aether_privacy::redact`]): erased for
    /// an erased subject, sealed otherwise. An event without personal fields is left as it is.
    ///
    /// # Errors
    /// As [`KeyStore::lookup`]; the event is unchanged then.
    pub async fn redact(&self, event: &mut Event) -> aether_core::Result<()> {
        aether_privacy::redact(&mut event.data, &*self.keys).await
    }

    /// [`redact`](Self::redact) on each event.
    ///
    /// # Errors
    /// As [`redact`](Self::redact).
    pub async fn redact_all(&self, events: &mut [Event]) -> aether_core::Result<()> {
        for event in events {
            self.redact(event).await?;
        }
        Ok(())
    }

    /// [`redact`](Self::redact) on a shared event: the same event when it holds no personal
    /// field, a redacted copy otherwise.
    ///
    /// # Errors
    /// As [`redact`](Self::redact).
    pub async fn redact_shared(&self, event: Arc<Event>) -> aether_core::Result<Arc<Event>> {
        if !holds_personal(&event.data) {
            return Ok(event);
        }
        let mut copy = (*event).clone();
        self.redact(&mut copy).await?;
        Ok(Arc::new(copy))
    }
}

/// How long a tool that found no key bucket (or failed to open it) waits before it looks
/// again.
pub const KEY_BUCKET_RECHECK: Duration = Duration::from_secs(10);

/// [`ShownKeys`] for a long-running tool (a live tail, the dashboard): the key bucket is
/// opened once, when the first personal field is to be shown; while it does not exist it is
/// looked for again at most every [`KEY_BUCKET_RECHECK`].
#[derive(Debug)]
pub struct LazyShownKeys {
    connection: Connection,
    namespace: Option<String>,
    opened: OnceCell<ShownKeys>,
    /// When the bucket was last looked for and not opened.
    missed: Mutex<Option<Instant>>,
}

impl LazyShownKeys {
    /// The key bucket of `namespace` on `connection`, not looked for yet.
    pub fn new(connection: Connection, namespace: Option<String>) -> Self {
        Self {
            connection,
            namespace,
            opened: OnceCell::new(),
            missed: Mutex::new(None),
        }
    }

    fn missed(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // One `Option<Instant>`: a panicked holder leaves nothing half-written.
        self.missed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The key bucket: opened on the first call that finds it; `None` while it does not
    /// exist, and until [`KEY_BUCKET_RECHECK`] has passed since it was last looked for.
    ///
    /// # Errors
    /// As [`ShownKeys::open`] (tried again after [`KEY_BUCKET_RECHECK`]).
    pub async fn get(&self) -> aether_core::Result<Option<&ShownKeys>> {
        if let Some(keys) = self.opened.get() {
            return Ok(Some(keys));
        }
        if self
            .missed()
            .is_some_and(|at| at.elapsed() < KEY_BUCKET_RECHECK)
        {
            return Ok(None);
        }
        let opened = ShownKeys::open(&self.connection, self.namespace.as_deref()).await;
        match opened {
            Ok(Some(keys)) => {
                // Another caller may have opened it meanwhile: either is the bucket.
                let _ = self.opened.set(keys);
                Ok(self.opened.get())
            }
            Ok(None) => {
                *self.missed() = Some(Instant::now());
                Ok(None)
            }
            Err(e) => {
                *self.missed() = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// [`ShownKeys::redact_shared`] once the key bucket exists; the event as it is while it
    /// does not (nothing was sealed, or nothing erased, there yet). An event without personal
    /// fields never opens the bucket.
    ///
    /// # Errors
    /// As [`get`](Self::get) and [`ShownKeys::redact`]: the caller may show the event as it
    /// is (its personal fields sealed) and say so.
    pub async fn redact_shared(&self, event: Arc<Event>) -> aether_core::Result<Arc<Event>> {
        if !holds_personal(&event.data) {
            return Ok(event);
        }
        match self.get().await? {
            Some(keys) => keys.redact_shared(event).await,
            None => Ok(event),
        }
    }

    /// [`ShownKeys::redact_all`] once the key bucket exists (see
    /// [`redact_shared`](Self::redact_shared)).
    ///
    /// # Errors
    /// As [`redact_shared`](Self::redact_shared); the events may be partly redacted then.
    pub async fn redact_all(&self, events: &mut [Event]) -> aether_core::Result<()> {
        if !events.iter().any(|e| holds_personal(&e.data)) {
            return Ok(());
        }
        match self.get().await? {
            Some(keys) => keys.redact_all(events).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_name_their_key_buckets() {
        assert_eq!(key_store_config(None).bucket_name(), "AETHER_KEYS");
        assert_eq!(
            key_store_config(Some("shop")).bucket_name(),
            "AETHER_KEYS_shop"
        );
        assert!(possible_bucket_name("AETHER_KEYS_a-b_1"));
        assert!(!possible_bucket_name("AETHER_KEYS_a.b"));
        assert!(!possible_bucket_name("AETHER_KEYS_a b"));
        assert!(!possible_bucket_name(""));
    }
}
