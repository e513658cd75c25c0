//! Sealing and revealing the personal fields of event data and snapshot state.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aether_core::personal::{is_whole_marker, personal_fields_mut, PersonalField, PERSONAL_FIELD};
use aether_core::{Error, EventData, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

use crate::keys::{DataKey, KeyState, KeyStore};

/// The cipher named in sealed fields: AES-256 in Galois/Counter Mode, which processors
/// with AES instructions run in a few hundred nanoseconds for a field.
pub const ALGORITHM: &str = "aes256gcm";

/// GCM's nonce: 96 random bits per value. A key belongs to one data subject, so it seals
/// far fewer values than the 2^32 that random nonces are safe for under one key.
const NONCE_BYTES: usize = 12;

/// The cipher of `key` (its key schedule computed once per subject and read).
fn cipher(key: &DataKey) -> Aes256Gcm {
    Aes256Gcm::new(key.as_bytes().into())
}

/// What the ciphertext is bound to besides the key: the format and the subject, so a sealed
/// value cannot be passed off as another subject's.
fn associated_data(subject: &str) -> Vec<u8> {
    let mut aad = b"aether.personal.1\0".to_vec();
    aad.extend_from_slice(subject.as_bytes());
    aad
}

/// Runs `f` on `data` seen as one value holding it, for a payload that is one marker.
async fn as_wrapped<F, Fut>(data: &mut EventData, f: F) -> Result<()>
where
    F: FnOnce(EventData) -> Fut,
    Fut: std::future::Future<Output = Result<EventData>>,
{
    let mut wrapper = EventData::new();
    wrapper.insert("whole".into(), Value::Object(std::mem::take(data)));
    let result = f(wrapper).await;
    match result {
        Ok(mut done) => {
            if let Some(Value::Object(o)) = done.remove("whole") {
                *data = o;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The keys met so far in one call, by subject (few per event: a linear search).
struct Found<T>(Vec<(String, T)>);

impl<T> Default for Found<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Clone> Found<T> {
    fn get(&self, subject: &str) -> Option<T> {
        self.0
            .iter()
            .find(|(s, _)| s == subject)
            .map(|(_, t)| t.clone())
    }
}

/// Seals every clear personal field of `data` with its subject's key (created when the
/// subject has none). Data without personal fields is left as it is, at the cost of one walk.
///
/// # Errors
/// As [`KeyStore::key_for`] (an erased subject is [`Error::InvalidInput`]); a malformed
/// personal field is [`Error::InvalidInput`]; [`Error::Encoding`] if a value cannot be
/// encoded. Nothing is changed on error.
pub async fn seal(data: &mut EventData, keys: &dyn KeyStore) -> Result<()> {
    if is_whole_marker(data) {
        let keys_ref = keys;
        return as_wrapped(data, |mut w| async move {
            Box::pin(seal(&mut w, keys_ref)).await?;
            Ok(w)
        })
        .await;
    }
    let mut fields = personal_fields_mut(data);
    if fields.is_empty() {
        return Ok(());
    }
    // Everything is computed before anything is replaced, so an error changes nothing.
    let mut found: Found<Aes256Gcm> = Found(Vec::new());
    let mut sealed = Vec::with_capacity(fields.len());
    for (i, v) in fields.iter().enumerate() {
        match PersonalField::parse(v) {
            Some(Ok(PersonalField::Clear { subject, value })) => {
                let sealer = match found.get(&subject) {
                    Some(sealer) => sealer,
                    None => {
                        let sealer = cipher(&keys.key_for(&subject).await?);
                        found.0.push((subject.clone(), sealer.clone()));
                        sealer
                    }
                };
                sealed.push((i, seal_value(&subject, &value, &sealer)?.to_value()));
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => return Err(Error::invalid(format!("malformed personal field: {e}"))),
        }
    }
    for (i, value) in sealed {
        *fields[i] = value;
    }
    Ok(())
}

fn seal_value(subject: &str, value: &Value, cipher: &Aes256Gcm) -> Result<PersonalField> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(value).map_err(|e| Error::Encoding(e.to_string()))?,
    );
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|e| Error::backend("drawing a nonce", e.to_string()))?;
    let aad = associated_data(subject);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| Error::Encoding(format!("sealing a personal field of {subject:?}")))?;
    let mut out = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(PersonalField::Sealed {
        subject: subject.to_owned(),
        alg: ALGORITHM.to_owned(),
        sealed: STANDARD.encode(out),
    })
}

fn open_value(subject: &str, alg: &str, sealed: &str, cipher: &Aes256Gcm) -> Result<Value> {
    if alg != ALGORITHM {
        return Err(Error::Decoding(format!(
            "the personal field of {subject:?} is sealed with {alg:?}, which this version \
             does not know"
        )));
    }
    let bytes = STANDARD
        .decode(sealed)
        .map_err(|_| Error::Decoding(format!("the personal field of {subject:?} is not base64")))?;
    if bytes.len() < NONCE_BYTES {
        return Err(Error::Decoding(format!(
            "the personal field of {subject:?} is too short to be sealed"
        )));
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let aad = associated_data(subject);
    let plain = zeroize::Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                Error::Decoding(format!(
                    "the personal field of {subject:?} does not authenticate with the \
                     subject's key: it was altered, or sealed for another subject"
                ))
            })?,
    );
    serde_json::from_slice(&plain).map_err(|e| {
        Error::Decoding(format!(
            "the personal field of {subject:?} opens to malformed JSON: {e}"
        ))
    })
}

/// Opens every sealed personal field of `data`: a subject with a key gets its value back; an
/// erased subject (or one the key store never knew: its key is gone) reads as erased.
/// Clear and erased fields are left as they are.
///
/// # Errors
/// [`Error::Decoding`] for a sealed field that does not open with its subject's key (altered,
/// or of an unknown cipher) or a malformed marker; as [`KeyStore::lookup`].
pub async fn reveal(data: &mut EventData, keys: &dyn KeyStore) -> Result<()> {
    Opener::default().reveal(data, keys).await
}

/// How many subjects an [`Opener`] remembers before starting over.
const OPENER_SUBJECTS: usize = 64;

/// Opens the sealed fields of several payloads read together, reading each subject's key
/// (and computing its cipher) once for all of them.
#[derive(Default)]
pub(crate) struct Opener {
    /// Each subject met, with its cipher (`None`: erased or unknown).
    found: Found<Option<Aes256Gcm>>,
}

impl Opener {
    /// [`reveal`] with the subjects met so far.
    pub(crate) async fn reveal(&mut self, data: &mut EventData, keys: &dyn KeyStore) -> Result<()> {
        if is_whole_marker(data) {
            return as_wrapped(data, |mut w| async move {
                Box::pin(self.reveal(&mut w, keys)).await?;
                Ok(w)
            })
            .await;
        }
        for v in personal_fields_mut(data) {
            let Some(body) = v.get_mut(PERSONAL_FIELD).and_then(Value::as_object_mut) else {
                return Err(Error::Decoding(format!(
                    "malformed personal field: {PERSONAL_FIELD} must hold an object"
                )));
            };
            let (
                Some(Value::String(subject)),
                Some(Value::String(alg)),
                Some(Value::String(sealed)),
            ) = (body.get("subject"), body.get("alg"), body.get("sealed"))
            else {
                // Clear or erased (or malformed, which typed decoding reports).
                continue;
            };
            let opener = match self.found.get(subject) {
                Some(opener) => opener,
                None => {
                    if self.found.0.len() >= OPENER_SUBJECTS {
                        // A read of many subjects: keep the search short.
                        self.found.0.clear();
                    }
                    let opener = match keys.lookup(subject).await? {
                        KeyState::Active(key) => Some(cipher(&key)),
                        KeyState::Erased => None,
                        KeyState::Unknown => {
                            tracing::warn!(
                                subject = %subject,
                                "a sealed personal field names a subject the key store never \
                                 held; it reads as erased (is the key store the one the data \
                                 was written with?)"
                            );
                            None
                        }
                    };
                    self.found.0.push((subject.clone(), opener.clone()));
                    opener
                }
            };
            let opened = match &opener {
                Some(c) => Some(open_value(subject, alg, sealed, c)?),
                None => None,
            };
            body.remove("alg");
            body.remove("sealed");
            match opened {
                Some(value) => body.insert("value".into(), value),
                None => body.insert("erased".into(), Value::Bool(true)),
            };
        }
        Ok(())
    }
}

/// Marks every sealed personal field of `data` as what a tool may show without opening it:
/// erased when its subject was erased (or its key is unknown), sealed otherwise. No key is
/// used; this is how the CLI and the dashboard show personal data.
///
/// # Errors
/// As [`KeyStore::lookup`].
pub async fn redact(data: &mut EventData, keys: &dyn KeyStore) -> Result<()> {
    if is_whole_marker(data) {
        let keys_ref = keys;
        return as_wrapped(data, |mut w| async move {
            Box::pin(redact(&mut w, keys_ref)).await?;
            Ok(w)
        })
        .await;
    }
    let mut erased: Found<bool> = Found(Vec::new());
    for v in personal_fields_mut(data) {
        let Some(Ok(PersonalField::Sealed { subject, .. })) = PersonalField::parse(v) else {
            continue;
        };
        let gone = match erased.get(&subject) {
            Some(gone) => gone,
            None => {
                let gone = !matches!(keys.lookup(&subject).await?, KeyState::Active(_));
                erased.0.push((subject.clone(), gone));
                gone
            }
        };
        if gone {
            *v = PersonalField::Erased { subject }.to_value();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MemoryKeyStore;
    use crate::Personal;
    use serde_json::json;

    fn data(v: serde_json::Value) -> EventData {
        v.as_object().cloned().unwrap_or_default()
    }

    #[tokio::test]
    async fn sealed_fields_hide_the_value_and_open_with_the_key() {
        let keys = MemoryKeyStore::new();
        let original = data(json!({
            "email": Personal::new("p-1", "ada@example.org"),
            "list": [Personal::new("p-2", 7)],
            "plan": "pro",
        }));
        let mut d = original.clone();
        seal(&mut d, &keys).await.unwrap();
        let text = serde_json::to_string(&d).unwrap();
        assert!(!text.contains("ada@example.org"), "{text}");
        assert!(text.contains("p-1") && text.contains(ALGORITHM) && text.contains("pro"));
        assert!(!aether_core::personal::holds_clear_personal(&d));
        // Sealing twice gives two ciphertexts (fresh nonces).
        let mut again = original.clone();
        seal(&mut again, &keys).await.unwrap();
        assert_ne!(again, d);
        let mut opened = d.clone();
        reveal(&mut opened, &keys).await.unwrap();
        assert_eq!(opened, original);
        let mut shown = d.clone();
        redact(&mut shown, &keys).await.unwrap();
        assert_eq!(shown, d, "a subject with a key stays sealed for tools");

        keys.erase("p-1").await.unwrap();
        let mut after = d.clone();
        reveal(&mut after, &keys).await.unwrap();
        assert_eq!(
            after["email"],
            json!({"$personal": {"subject": "p-1", "erased": true}})
        );
        assert_eq!(
            after["list"][0],
            json!({"$personal": {"subject": "p-2", "value": 7}})
        );
        let mut shown = d.clone();
        redact(&mut shown, &keys).await.unwrap();
        assert_eq!(shown["email"], after["email"]);
        assert_eq!(shown["list"], d["list"]);
        // Nothing new is sealed for an erased subject, and nothing changes on refusal.
        let mut refused =
            data(json!({"e": Personal::new("p-1", "x"), "f": Personal::new("p-3", 1)}));
        let before = refused.clone();
        assert!(matches!(
            seal(&mut refused, &keys).await,
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(refused, before);
    }

    #[tokio::test]
    async fn altered_or_moved_ciphertext_is_a_decoding_error() {
        let keys = MemoryKeyStore::new();
        let mut d = data(json!({"a": Personal::new("p-1", "x"), "b": Personal::new("p-2", "y")}));
        seal(&mut d, &keys).await.unwrap();
        // The same ciphertext under another subject's name does not open.
        let mut moved = d.clone();
        let mut a = moved["a"].clone();
        a["$personal"]["subject"] = json!("p-2");
        moved.insert("a".into(), a);
        assert!(matches!(
            reveal(&mut moved, &keys).await,
            Err(Error::Decoding(_))
        ));
        // A flipped byte does not open.
        let mut flipped = d.clone();
        let sealed = flipped["a"]["$personal"]["sealed"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut bytes = STANDARD.decode(sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        flipped["a"]["$personal"]["sealed"] = json!(STANDARD.encode(bytes));
        assert!(matches!(
            reveal(&mut flipped, &keys).await,
            Err(Error::Decoding(_))
        ));
        // An unknown cipher or garbage is typed too.
        let mut other = d.clone();
        other["a"]["$personal"]["alg"] = json!("rot13");
        assert!(matches!(
            reveal(&mut other, &keys).await,
            Err(Error::Decoding(_))
        ));
        let mut garbage = d;
        garbage["a"]["$personal"]["sealed"] = json!("!!");
        assert!(matches!(
            reveal(&mut garbage, &keys).await,
            Err(Error::Decoding(_))
        ));
    }

    #[tokio::test]
    async fn a_subject_the_store_never_knew_reads_as_erased() {
        let writer = MemoryKeyStore::new();
        let mut d = data(json!({"a": Personal::new("p-1", "x")}));
        seal(&mut d, &writer).await.unwrap();
        reveal(&mut d, &MemoryKeyStore::new()).await.unwrap();
        assert_eq!(
            d["a"],
            json!({"$personal": {"subject": "p-1", "erased": true}})
        );
    }
}
