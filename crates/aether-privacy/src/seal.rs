//! Sealing and revealing the personal fields of event data and snapshot state.

use std::collections::HashMap;

use aether_core::personal::{holds_personal, visit_personal_in_mut, PersonalField};
use aether_core::{Error, EventData, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::keys::{DataKey, KeyState, KeyStore};

/// The cipher named in sealed fields.
pub const ALGORITHM: &str = "xchacha20poly1305";

/// XChaCha20's nonce: 192 bits, so random nonces never repeat in practice.
const NONCE_BYTES: usize = 24;

/// What the ciphertext is bound to besides the key: the format and the subject, so a sealed
/// value cannot be passed off as another subject's.
fn associated_data(subject: &str) -> Vec<u8> {
    let mut aad = b"aether.personal.1\0".to_vec();
    aad.extend_from_slice(subject.as_bytes());
    aad
}

/// The distinct subjects of the fields in `data` that are in the wanted form.
fn subjects(data: &mut EventData, wanted: fn(&PersonalField) -> bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    visit_personal_in_mut(data, &mut |v| {
        if let Some(Ok(field)) = PersonalField::parse(v) {
            if wanted(&field) && !out.iter().any(|s| s == field.subject()) {
                out.push(field.subject().to_owned());
            }
        }
    });
    out
}

/// Seals every clear personal field of `data` with its subject's key (created when the
/// subject has none). Data without personal fields is left as it is, at the cost of one walk.
///
/// # Errors
/// As [`KeyStore::key_for`] (an erased subject is [`Error::InvalidInput`]); a malformed
/// personal field is [`Error::InvalidInput`]; [`Error::Encoding`] if a value cannot be
/// encoded. Nothing is changed on error.
pub async fn seal(data: &mut EventData, keys: &dyn KeyStore) -> Result<()> {
    if !holds_personal(data) {
        return Ok(());
    }
    let wanted = subjects(data, |f| matches!(f, PersonalField::Clear { .. }));
    let mut found = HashMap::with_capacity(wanted.len());
    for subject in wanted {
        let key = keys.key_for(&subject).await?;
        found.insert(subject, key);
    }
    let mut sealed = data.clone();
    let mut failure = None;
    visit_personal_in_mut(&mut sealed, &mut |v| {
        if failure.is_some() {
            return;
        }
        match PersonalField::parse(v) {
            Some(Ok(PersonalField::Clear { subject, value })) => match found.get(&subject) {
                Some(key) => match seal_value(&subject, &value, key) {
                    Ok(field) => *v = field.to_value(),
                    Err(e) => failure = Some(e),
                },
                None => failure = Some(Error::invalid("a personal field changed while sealing")),
            },
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                failure = Some(Error::invalid(format!("malformed personal field: {e}")))
            }
            None => {}
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    *data = sealed;
    Ok(())
}

fn seal_value(subject: &str, value: &serde_json::Value, key: &DataKey) -> Result<PersonalField> {
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(value).map_err(|e| Error::Encoding(e.to_string()))?,
    );
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).map_err(|e| Error::backend("drawing a nonce", e.to_string()))?;
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let aad = associated_data(subject);
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
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

fn open_value(subject: &str, alg: &str, sealed: &str, key: &DataKey) -> Result<serde_json::Value> {
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
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let aad = associated_data(subject);
    let plain = zeroize::Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
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
    if !holds_personal(data) {
        return Ok(());
    }
    let wanted = subjects(data, |f| matches!(f, PersonalField::Sealed { .. }));
    let mut found = HashMap::with_capacity(wanted.len());
    for subject in wanted {
        let state = keys.lookup(&subject).await?;
        if state == KeyState::Unknown {
            tracing::warn!(
                subject = %subject,
                "a sealed personal field names a subject the key store never held; it reads as \
                 erased (is the key store the one the data was written with?)"
            );
        }
        found.insert(subject, state);
    }
    let mut failure = None;
    visit_personal_in_mut(data, &mut |v| {
        if failure.is_some() {
            return;
        }
        match PersonalField::parse(v) {
            Some(Ok(PersonalField::Sealed {
                subject,
                alg,
                sealed,
            })) => match found.get(&subject) {
                Some(KeyState::Active(key)) => match open_value(&subject, &alg, &sealed, key) {
                    Ok(value) => *v = PersonalField::Clear { subject, value }.to_value(),
                    Err(e) => failure = Some(e),
                },
                _ => *v = PersonalField::Erased { subject }.to_value(),
            },
            Some(Ok(_)) | None => {}
            Some(Err(e)) => {
                failure = Some(Error::Decoding(format!("malformed personal field: {e}")))
            }
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Marks every sealed personal field of `data` as what a tool may show without opening it:
/// erased when its subject was erased (or its key is unknown), sealed otherwise. No key is
/// used; this is how the CLI and the dashboard show personal data.
///
/// # Errors
/// As [`KeyStore::lookup`].
pub async fn redact(data: &mut EventData, keys: &dyn KeyStore) -> Result<()> {
    if !holds_personal(data) {
        return Ok(());
    }
    let wanted = subjects(data, |f| matches!(f, PersonalField::Sealed { .. }));
    let mut erased = Vec::new();
    for subject in wanted {
        if !matches!(keys.lookup(&subject).await?, KeyState::Active(_)) {
            erased.push(subject);
        }
    }
    visit_personal_in_mut(data, &mut |v| {
        if let Some(Ok(PersonalField::Sealed { subject, .. })) = PersonalField::parse(v) {
            if erased.contains(&subject) {
                *v = PersonalField::Erased { subject }.to_value();
            }
        }
    });
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
