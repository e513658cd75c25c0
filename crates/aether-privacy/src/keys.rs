//! Data keys and where they are kept: [`KeyStore`], [`MemoryKeyStore`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use aether_core::{Error, Result};
use async_trait::async_trait;
use zeroize::Zeroizing;

/// The length of a data key in bytes (AES-256-GCM keys are 256 bits).
pub const KEY_BYTES: usize = 32;

/// One data subject's key. Its bytes are wiped from memory when it is dropped, and neither
/// `Debug` nor anything else in this crate shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(Zeroizing<[u8; KEY_BYTES]>);

impl DataKey {
    /// A new random key from the operating system's generator.
    ///
    /// # Errors
    /// [`Error::Backend`] when the system has no random source.
    pub fn generate() -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| Error::backend("generating a data key", e.to_string()))?;
        Ok(Self(bytes))
    }

    /// A key of the given bytes (a key store reading back what it kept).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key's bytes, for a key store that keeps them and for the cipher.
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// What a key store holds for a data subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// The subject's key: its personal data can be read.
    Active(DataKey),
    /// The subject was erased: its key is gone for good.
    Erased,
    /// The store never held a key for the subject.
    Unknown,
}

/// What an [`erase`](KeyStore::erase) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasure {
    /// The subject's key was deleted now.
    Erased,
    /// The subject had been erased before (any unfinished step of that erasure is finished).
    AlreadyErased,
}

/// Where the data subjects' keys are kept: a NATS key-value bucket by default
/// (`NatsKeyStore`, feature `nats`), [`MemoryKeyStore`] in tests, or a key management
/// service behind this trait. Usable as `Arc<dyn KeyStore>`.
///
/// A key store never shows a key in logs, metrics or errors.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The key of `subject`, created when it has none, to seal new personal data with.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed subject id, or when the subject was erased:
    /// nothing personal may be written for an erased subject (Handling: the application
    /// stops writing personal data of that person; an erased subject stays erased).
    /// Backend errors ([`Error::Unavailable`], ...) as typed variants (Handling: retry).
    async fn key_for(&self, subject: &str) -> Result<DataKey>;

    /// What the store holds for `subject`, creating nothing.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a malformed subject id; backend errors as typed variants.
    async fn lookup(&self, subject: &str) -> Result<KeyState>;

    /// Erases `subject`: deletes its key for good, so that its sealed personal data can never
    /// be read again, wherever it is stored. Idempotent: erasing again finishes any step an
    /// interrupted erasure left and answers [`Erasure::AlreadyErased`].
    ///
    /// # Errors
    /// [`Error::NotFound`] when the store never held a key for `subject` (Handling: check
    /// the id: a subject with personal data on record has a key); [`Error::InvalidInput`] for
    /// a malformed id; backend errors as typed variants (Handling: retry: it is idempotent).
    async fn erase(&self, subject: &str) -> Result<Erasure>;
}

/// Checks a subject id as every key store does.
pub(crate) fn check_subject(subject: &str) -> Result<()> {
    aether_core::personal::validate_subject(subject).map_err(Error::invalid)
}

/// The refusal to seal for an erased subject.
pub(crate) fn erased_refusal(subject: &str) -> Error {
    Error::invalid(format!(
        "data subject {subject:?} was erased: no personal data can be written for it"
    ))
}

/// The answer to erasing a subject the store never knew.
pub(crate) fn unknown_subject(subject: &str) -> Error {
    Error::NotFound(format!("data subject {subject:?} has no key to erase"))
}

/// Keys in this process's memory: for tests and single-process applications whose events
/// live in memory too (keys kept here die with the process, and so does personal data sealed
/// with them).
#[derive(Default)]
pub struct MemoryKeyStore {
    /// `None`: erased.
    keys: Mutex<HashMap<String, Option<DataKey>>>,
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<DataKey>>> {
        // The map stays consistent if a holder panicked: every change is one insert.
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("subjects", &self.keys().len())
            .finish()
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn key_for(&self, subject: &str) -> Result<DataKey> {
        check_subject(subject)?;
        let mut keys = self.keys();
        match keys.get(subject) {
            Some(Some(key)) => Ok(key.clone()),
            Some(None) => Err(erased_refusal(subject)),
            None => {
                let key = DataKey::generate()?;
                keys.insert(subject.to_owned(), Some(key.clone()));
                Ok(key)
            }
        }
    }

    async fn lookup(&self, subject: &str) -> Result<KeyState> {
        check_subject(subject)?;
        Ok(match self.keys().get(subject) {
            Some(Some(key)) => KeyState::Active(key.clone()),
            Some(None) => KeyState::Erased,
            None => KeyState::Unknown,
        })
    }

    async fn erase(&self, subject: &str) -> Result<Erasure> {
        check_subject(subject)?;
        let mut keys = self.keys();
        match keys.get_mut(subject) {
            Some(slot @ Some(_)) => {
                *slot = None;
                Ok(Erasure::Erased)
            }
            Some(None) => Ok(Erasure::AlreadyErased),
            None => Err(unknown_subject(subject)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_keys_are_created_once_and_erased_for_good() {
        let keys = MemoryKeyStore::new();
        assert_eq!(keys.lookup("p").await.unwrap(), KeyState::Unknown);
        let k = keys.key_for("p").await.unwrap();
        assert_eq!(keys.key_for("p").await.unwrap(), k);
        assert_eq!(keys.lookup("p").await.unwrap(), KeyState::Active(k));
        assert_eq!(keys.erase("p").await.unwrap(), Erasure::Erased);
        assert_eq!(keys.erase("p").await.unwrap(), Erasure::AlreadyErased);
        assert_eq!(keys.lookup("p").await.unwrap(), KeyState::Erased);
        assert!(matches!(
            keys.key_for("p").await,
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(keys.erase("q").await, Err(Error::NotFound(_))));
        assert!(matches!(
            keys.key_for("").await,
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn keys_never_show() {
        let k = DataKey::from_bytes([7; KEY_BYTES]);
        assert_eq!(format!("{k:?}"), "DataKey(<redacted>)");
        assert_ne!(DataKey::generate().unwrap(), DataKey::generate().unwrap());
    }
}
