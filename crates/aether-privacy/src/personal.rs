//! [`Personal`]: a field of an event or a state that belongs to a data subject.

use std::fmt;
use std::marker::PhantomData;

use aether_core::personal::PERSONAL_FIELD;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// A value that belongs to a data subject (a person, named by an id the application gives):
/// sealed with the subject's key when stored through a [`PrivateStore`](crate::PrivateStore),
/// and read back as erased once the subject is erased.
///
/// In JSON it is a marker object (see [`aether_core::personal`]); its `Debug` form never shows
/// the value, so personal data stays out of logs.
///
/// ```
/// use aether_privacy::Personal;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Registered {
///     email: Personal<String>,
///     plan: String,
/// }
///
/// let event = Registered { email: Personal::new("person-42", "ada@example.org".into()), plan: "pro".into() };
/// assert_eq!(event.email.get().map(String::as_str), Some("ada@example.org"));
/// assert!(!format!("{:?}", event.email).contains("ada"));
///
/// // What a reader gets once person-42 is erased:
/// let erased: Personal<String> = serde_json::from_value(
///     serde_json::json!({"$personal": {"subject": "person-42", "erased": true}}),
/// )?;
/// assert!(erased.is_erased());
/// assert_eq!(erased.subject(), "person-42");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Personal<T> {
    subject: String,
    value: Option<T>,
}

impl<T> Personal<T> {
    /// `value`, belonging to `subject`. The subject's id is stored in clear: use an opaque id,
    /// never personal data (an email address, a name).
    pub fn new(subject: impl Into<String>, value: T) -> Self {
        Self {
            subject: subject.into(),
            value: Some(value),
        }
    }

    /// The erased value of `subject`.
    pub fn erased(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            value: None,
        }
    }

    /// The data subject the value belongs to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The value, `None` once the subject was erased.
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }

    /// The value, `None` once the subject was erased.
    pub fn into_inner(self) -> Option<T> {
        self.value
    }

    /// Whether the subject was erased (the value is gone).
    pub fn is_erased(&self) -> bool {
        self.value.is_none()
    }
}

impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Personal")
            .field("subject", &self.subject)
            .field(
                "value",
                &if self.value.is_some() {
                    "<personal>"
                } else {
                    "<erased>"
                },
            )
            .finish()
    }
}

/// The body of the marker, borrowed for writing.
struct Body<'a, T> {
    subject: &'a str,
    value: Option<&'a T>,
}

impl<T: Serialize> Serialize for Body<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("subject", self.subject)?;
        match self.value {
            Some(v) => map.serialize_entry("value", v)?,
            None => map.serialize_entry("erased", &true)?,
        }
        map.end()
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(
            PERSONAL_FIELD,
            &Body {
                subject: &self.subject,
                value: self.value.as_ref(),
            },
        )?;
        map.end()
    }
}

/// The body of the marker, as read.
#[derive(Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
struct OwnedBody<T> {
    subject: String,
    #[serde(default = "none")]
    value: Option<T>,
    #[serde(default)]
    erased: bool,
    #[serde(default)]
    sealed: Option<serde::de::IgnoredAny>,
}

fn none<T>() -> Option<T> {
    None
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Marker<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Marker<T> {
            type Value = Personal<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a personal field ({{\"{PERSONAL_FIELD}\": {{...}}}})")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut body: Option<OwnedBody<T>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != PERSONAL_FIELD || body.is_some() {
                        return Err(de::Error::custom(format!(
                            "a personal field is an object with the one key {PERSONAL_FIELD}, \
                             not {key:?}"
                        )));
                    }
                    body = Some(map.next_value()?);
                }
                let body = body.ok_or_else(|| de::Error::missing_field(PERSONAL_FIELD))?;
                if body.sealed.is_some() {
                    return Err(de::Error::custom(format!(
                        "the personal field of subject {:?} is sealed: read it through a \
                         PrivateStore (aether-privacy), which opens it with the subject's key",
                        body.subject
                    )));
                }
                match (body.value, body.erased) {
                    (Some(value), false) => Ok(Personal::new(body.subject, value)),
                    (None, true) => Ok(Personal::erased(body.subject)),
                    _ => Err(de::Error::custom(format!(
                        "the personal field of subject {:?} is neither a value nor erased",
                        body.subject
                    ))),
                }
            }
        }
        deserializer.deserialize_map(Marker(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aether_core::personal::PersonalField;
    use serde_json::json;

    #[test]
    fn it_serialises_as_the_marker_core_reads() {
        let p = Personal::new("p-1", json!({"name": "Ada"}));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            PersonalField::parse(&v),
            Some(Ok(PersonalField::Clear {
                subject: "p-1".into(),
                value: json!({"name": "Ada"})
            }))
        );
        let back: Personal<serde_json::Value> = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
        let erased = serde_json::to_value(Personal::<String>::erased("p-1")).unwrap();
        assert_eq!(
            PersonalField::parse(&erased),
            Some(Ok(PersonalField::Erased {
                subject: "p-1".into()
            }))
        );
    }

    #[test]
    fn a_sealed_or_malformed_field_is_a_clear_error() {
        let sealed = json!({"$personal": {"subject": "p-1", "alg": "a", "sealed": "x"}});
        let err = serde_json::from_value::<Personal<String>>(sealed).unwrap_err();
        assert!(err.to_string().contains("PrivateStore"), "{err}");
        for bad in [
            json!({"$personal": {"subject": "p-1"}}),
            json!({"$personal": {"subject": "p-1", "value": "x"}, "other": 1}),
            json!({"other": 1}),
            json!("plain"),
        ] {
            assert!(serde_json::from_value::<Personal<String>>(bad).is_err());
        }
    }

    #[test]
    fn debug_never_shows_the_value() {
        let p = Personal::new("p-1", "secret".to_string());
        assert!(!format!("{p:?}").contains("secret"));
        assert!(format!("{:?}", Personal::<String>::erased("p")).contains("erased"));
    }
}
