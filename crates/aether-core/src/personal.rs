//! The stored form of personal data: a field that belongs to a data subject (a person), held in
//! an event's data or a snapshot's state as a marker object, so that stores, tools and the
//! privacy layer (`aether-privacy`) recognise it without knowing the application's types.
//!
//! A personal field is one JSON object with a single key, [`PERSONAL_FIELD`]:
//! - clear, in memory only: `{"$personal": {"subject": "p-42", "value": <any JSON>}}`;
//! - sealed, as stored: `{"$personal": {"subject": "p-42", "alg": "aes256gcm",
//!   "sealed": "<base64 nonce and ciphertext>"}}`;
//! - erased, once the subject's key is gone: `{"$personal": {"subject": "p-42", "erased": true}}`.
//!
//! Stores refuse to save clear personal fields ([`holds_clear_personal`], checked by
//! [`Event::validate`](crate::Event::validate) and
//! [`Snapshot::validate`](crate::Snapshot::validate)): personal data reaches a log only sealed,
//! through a store that seals it, never in clear by a forgotten wrapper.

use serde_json::{Map, Value};

/// The key of a personal field's marker object.
pub const PERSONAL_FIELD: &str = "$personal";

/// The most bytes a data subject's id may have.
pub const MAX_SUBJECT_BYTES: usize = 256;

/// One personal field, as found in event data or snapshot state.
#[derive(Debug, Clone, PartialEq)]
pub enum PersonalField {
    /// Readable: the subject's key was found (or the value was never sealed).
    Clear {
        /// The data subject the value belongs to.
        subject: String,
        /// The value.
        value: Value,
    },
    /// Encrypted with the subject's key, as stored.
    Sealed {
        /// The data subject the value belongs to.
        subject: String,
        /// The cipher (today always `aes256gcm`).
        alg: String,
        /// The nonce and the ciphertext with its tag, base64.
        sealed: String,
    },
    /// The subject was erased: its key is gone and so is the value.
    Erased {
        /// The data subject the value belonged to.
        subject: String,
    },
}

impl PersonalField {
    /// The data subject of the field.
    pub fn subject(&self) -> &str {
        match self {
            Self::Clear { subject, .. }
            | Self::Sealed { subject, .. }
            | Self::Erased { subject } => subject,
        }
    }

    /// Reads `value` as a personal field: `None` when it is not a marker object, `Some(Err)`
    /// with a description when it is one but malformed.
    pub fn parse(value: &Value) -> Option<Result<Self, String>> {
        let object = value.as_object()?;
        let inner = marker_body(object)?;
        Some(Self::parse_body(inner))
    }

    fn parse_body(inner: &Value) -> Result<Self, String> {
        let Some(body) = inner.as_object() else {
            return Err(format!("{PERSONAL_FIELD} must hold an object"));
        };
        let subject = match body.get("subject").and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None => return Err(format!("{PERSONAL_FIELD} has no subject")),
        };
        validate_subject(&subject)?;
        if let Some(value) = body.get("value") {
            return Ok(Self::Clear {
                subject,
                value: value.clone(),
            });
        }
        if body.get("erased").and_then(Value::as_bool) == Some(true) {
            return Ok(Self::Erased { subject });
        }
        match (
            body.get("alg").and_then(Value::as_str),
            body.get("sealed").and_then(Value::as_str),
        ) {
            (Some(alg), Some(sealed)) => Ok(Self::Sealed {
                subject,
                alg: alg.to_owned(),
                sealed: sealed.to_owned(),
            }),
            _ => Err(format!(
                "{PERSONAL_FIELD} of subject {subject:?} is neither clear, sealed nor erased"
            )),
        }
    }

    /// The marker object of the field.
    pub fn to_value(&self) -> Value {
        let mut body = Map::new();
        body.insert("subject".into(), Value::String(self.subject().to_owned()));
        match self {
            Self::Clear { value, .. } => {
                body.insert("value".into(), value.clone());
            }
            Self::Sealed { alg, sealed, .. } => {
                body.insert("alg".into(), Value::String(alg.clone()));
                body.insert("sealed".into(), Value::String(sealed.clone()));
            }
            Self::Erased { .. } => {
                body.insert("erased".into(), Value::Bool(true));
            }
        }
        let mut marker = Map::new();
        marker.insert(PERSONAL_FIELD.into(), Value::Object(body));
        Value::Object(marker)
    }
}

/// The body of a marker object: `object` has exactly the key [`PERSONAL_FIELD`].
fn marker_body(object: &Map<String, Value>) -> Option<&Value> {
    if object.len() == 1 {
        object.get(PERSONAL_FIELD)
    } else {
        None
    }
}

/// Checks a data subject's id: 1 to [`MAX_SUBJECT_BYTES`] bytes, no control characters.
///
/// # Errors
/// A description of what is wrong.
pub fn validate_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("a data subject's id must not be empty".into());
    }
    if subject.len() > MAX_SUBJECT_BYTES {
        return Err(format!(
            "a data subject's id has at most {MAX_SUBJECT_BYTES} bytes, not {}",
            subject.len()
        ));
    }
    if subject.chars().any(char::is_control) {
        return Err("a data subject's id must not hold control characters".into());
    }
    Ok(())
}

/// The personal fields of `data` (markers anywhere in its values, depth first, in document
/// order), as mutable references, so a caller can seal or reveal them in place. A marker is
/// not searched further. A payload that is one marker as a whole ([`is_whole_marker`]) is not
/// listed: wrap it first.
pub fn personal_fields_mut(data: &mut Map<String, Value>) -> Vec<&mut Value> {
    fn collect<'a>(v: &'a mut Value, out: &mut Vec<&'a mut Value>) {
        let marker = matches!(v, Value::Object(o) if marker_body(o).is_some());
        if marker {
            out.push(v);
            return;
        }
        match v {
            Value::Object(o) => o.values_mut().for_each(|x| collect(x, out)),
            Value::Array(a) => a.iter_mut().for_each(|x| collect(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for v in data.values_mut() {
        collect(v, &mut out);
    }
    out
}

/// Whether the whole payload is one marker object.
pub fn is_whole_marker(data: &Map<String, Value>) -> bool {
    marker_body(data).is_some()
}

/// Whether `data` holds a personal field in any form.
pub fn holds_personal(data: &Map<String, Value>) -> bool {
    find(data, &|_| true)
}

/// Whether `data` holds a personal field in clear (or a malformed marker), which no store
/// may write.
pub fn holds_clear_personal(data: &Map<String, Value>) -> bool {
    find(data, &|body| {
        !matches!(
            PersonalField::parse_body(body),
            Ok(PersonalField::Sealed { .. } | PersonalField::Erased { .. })
        )
    })
}

fn find(data: &Map<String, Value>, wanted: &dyn Fn(&Value) -> bool) -> bool {
    fn walk(v: &Value, wanted: &dyn Fn(&Value) -> bool) -> bool {
        match v {
            Value::Object(o) => match marker_body(o) {
                Some(body) => wanted(body),
                None => o.values().any(|v| walk(v, wanted)),
            },
            Value::Array(items) => items.iter().any(|v| walk(v, wanted)),
            _ => false,
        }
    }
    match marker_body(data) {
        Some(body) => wanted(body),
        None => data.values().any(|v| walk(v, wanted)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_three_forms_round_trip() {
        for field in [
            PersonalField::Clear {
                subject: "p-1".into(),
                value: json!({"name": "Ada"}),
            },
            PersonalField::Sealed {
                subject: "p-1".into(),
                alg: "aes256gcm".into(),
                sealed: "AAAA".into(),
            },
            PersonalField::Erased {
                subject: "p-1".into(),
            },
        ] {
            assert_eq!(PersonalField::parse(&field.to_value()), Some(Ok(field)));
        }
        assert_eq!(PersonalField::parse(&json!({"name": "x"})), None);
        assert_eq!(
            PersonalField::parse(&json!({"$personal": 1, "other": 2})),
            None,
            "a marker is an object with one key"
        );
        assert!(matches!(
            PersonalField::parse(&json!({"$personal": {"subject": ""}})),
            Some(Err(_))
        ));
        assert!(matches!(
            PersonalField::parse(&json!({"$personal": {"subject": "p"}})),
            Some(Err(_))
        ));
    }

    #[test]
    fn clear_fields_are_found_anywhere() {
        let clear = json!({"$personal": {"subject": "p", "value": "Ada"}});
        let sealed = json!({"$personal": {"subject": "p", "alg": "a", "sealed": "x"}});
        let erased = json!({"$personal": {"subject": "p", "erased": true}});
        assert!(holds_clear_personal(&map(json!({"a": clear.clone()}))));
        assert!(holds_clear_personal(&map(
            json!({"a": [1, {"b": clear.clone()}]})
        )));
        assert!(holds_clear_personal(&map(clear.clone())));
        assert!(holds_clear_personal(&map(
            json!({"a": {"$personal": {"subject": "p"}}})
        )));
        assert!(!holds_clear_personal(&map(
            json!({"a": sealed.clone(), "b": [erased.clone()]})
        )));
        assert!(holds_personal(&map(json!({"a": [sealed]}))));
        assert!(!holds_personal(&map(json!({"a": {"b": 1}}))));
        let _ = erased;
    }

    #[test]
    fn every_marker_is_listed_once() {
        let field = json!({"$personal": {"subject": "p", "value": 1}});
        let mut data = map(json!({"a": field.clone(), "b": [field.clone(), {"c": field}]}));
        let fields = personal_fields_mut(&mut data);
        assert_eq!(fields.len(), 3);
        for v in fields {
            *v = PersonalField::Erased {
                subject: "p".into(),
            }
            .to_value();
        }
        assert!(!holds_clear_personal(&data));
        let mut whole = map(json!({"$personal": {"subject": "p", "value": 1}}));
        assert!(is_whole_marker(&whole));
        assert!(personal_fields_mut(&mut whole).is_empty());
    }

    #[test]
    fn subjects_are_checked() {
        assert!(validate_subject("person-42").is_ok());
        assert!(validate_subject("").is_err());
        assert!(validate_subject("a\nb").is_err());
        assert!(validate_subject(&"x".repeat(MAX_SUBJECT_BYTES + 1)).is_err());
    }
}
