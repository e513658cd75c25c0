//! Schema evolution: upcasters turn the stored JSON of an older event schema into the current
//! shape before typed decoding.

use std::collections::HashMap;
use std::fmt;

use aether_core::EventData;

/// The longest chain of upcasts one event may go through; more means the registrations loop
/// (a rename back and forth).
const MAX_STEPS: usize = 64;

type Transform = Box<dyn Fn(EventData) -> Result<EventData, String> + Send + Sync>;

enum Step {
    /// The payload of version `v` becomes version `v + 1` of the same type.
    Payload(Transform),
    /// The type is renamed; the schema version stays.
    Rename(String),
}

/// Upcasters of one event type family, registered per event type and schema version.
///
/// When an event is decoded, the upcaster registered for its `(type, version)` runs, then the
/// one for the result, and so on: a chain v1 → v2 → v3 applies in order. A payload upcaster
/// turns version `v` into `v + 1`; a rename keeps the version and changes the type, so the
/// chain continues with the new type's upcasters. Upcasters work on JSON, so the old Rust
/// shape need not exist any more.
///
/// ```
/// use aether_actor::Upcasters;
/// use serde_json::json;
///
/// let upcasters = Upcasters::new()
///     // v1 stored the amount in whole units; v2 in cents.
///     .upcast("Deposited", 1, |mut data| {
///         let units = data.get("amount").and_then(|v| v.as_i64()).ok_or("no amount")?;
///         data.insert("cents".into(), json!(units * 100));
///         data.remove("amount");
///         Ok(data)
///     })
///     // "MoneyIn" was the first name of "Deposited".
///     .rename("MoneyIn", 1, "Deposited");
///
/// let old = json!({"amount": 3}).as_object().cloned().unwrap();
/// let (event_type, version, data) = upcasters.apply("MoneyIn", 1, old)?;
/// assert_eq!((event_type.as_str(), version), ("Deposited", 2));
/// assert_eq!(data["cents"], 300);
/// # Ok::<(), String>(())
/// ```
#[derive(Default)]
pub struct Upcasters {
    /// Event type, then schema version.
    steps: HashMap<String, HashMap<u32, Step>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<String> = self
            .steps
            .iter()
            .flat_map(|(t, by_version)| by_version.iter().map(move |(v, s)| (t, v, s)))
            .map(|(t, v, step)| match step {
                Step::Payload(_) => format!("{t} v{v} -> v{}", v + 1),
                Step::Rename(to) => format!("{t} v{v} -> {to} v{v}"),
            })
            .collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether none are registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Registers `f` to turn the payload of `event_type` version `from_version` into version
    /// `from_version + 1`. An error from `f` (for example a required field missing) becomes
    /// the decoding error of the event. A later registration for the same type and version
    /// replaces this one.
    pub fn upcast<F>(mut self, event_type: impl Into<String>, from_version: u32, f: F) -> Self
    where
        F: Fn(EventData) -> Result<EventData, String> + Send + Sync + 'static,
    {
        let transform: Transform = Box::new(f);
        self.steps
            .entry(event_type.into())
            .or_default()
            .insert(from_version, Step::Payload(transform));
        self
    }

    /// Registers a rename: events stored as `from_type` at `version` decode as `to_type` at
    /// the same version (and go on through `to_type`'s upcasters).
    pub fn rename(
        mut self,
        from_type: impl Into<String>,
        version: u32,
        to_type: impl Into<String>,
    ) -> Self {
        self.steps
            .entry(from_type.into())
            .or_default()
            .insert(version, Step::Rename(to_type.into()));
        self
    }

    /// Both sets of upcasters in one, for a codec over an enum that joins several actor
    /// types' events (a projection, a bus subscriber): `A::upcasters().merge(B::upcasters())`.
    ///
    /// The two sets must not both register a step for the same event type and version:
    /// decoding could not tell whose events those are, so that is an [`UpcasterClash`]
    /// listing every such pair, not a silent choice. The same rename registered in both is
    /// no clash (it means the same either way). Chains run across the sets: a rename in one
    /// continues with the other's upcasters of the new type, as within one set.
    ///
    /// ```
    /// use aether_actor::Upcasters;
    ///
    /// let accounts = Upcasters::new().rename("MoneyIn", 1, "Deposited");
    /// let orders = Upcasters::new().rename("Ordered", 1, "OrderPlaced");
    /// let both = accounts.merge(orders)?;
    /// assert!(both.handles("MoneyIn", 1) && both.handles("Ordered", 1));
    ///
    /// let clash = Upcasters::new()
    ///     .rename("Opened", 1, "AccountOpened")
    ///     .merge(Upcasters::new().rename("Opened", 1, "OrderOpened"))
    ///     .unwrap_err();
    /// assert_eq!(clash.clashes, [("Opened".to_string(), 1)]);
    /// # Ok::<(), aether_actor::UpcasterClash>(())
    /// ```
    ///
    /// # Errors
    /// [`UpcasterClash`] when a payload upcaster, or two different renames, are registered
    /// for the same event type and version in both.
    pub fn merge(mut self, other: Upcasters) -> Result<Upcasters, UpcasterClash> {
        let mut clashes: Vec<(String, u32)> = other
            .steps
            .iter()
            .filter_map(|(event_type, theirs)| {
                Some((event_type, theirs, self.steps.get(event_type)?))
            })
            .flat_map(|(event_type, theirs, mine)| {
                theirs
                    .iter()
                    .filter_map(move |(version, step)| match (mine.get(version)?, step) {
                        (Step::Rename(a), Step::Rename(b)) if a == b => None,
                        _ => Some((event_type.clone(), *version)),
                    })
            })
            .collect();
        if !clashes.is_empty() {
            clashes.sort();
            return Err(UpcasterClash { clashes });
        }
        for (event_type, theirs) in other.steps {
            let mine = self.steps.entry(event_type).or_default();
            for (version, step) in theirs {
                mine.entry(version).or_insert(step);
            }
        }
        Ok(self)
    }

    /// Whether an upcaster is registered for `event_type` at `version`.
    pub fn handles(&self, event_type: &str, version: u32) -> bool {
        self.step(event_type, version).is_some()
    }

    fn step(&self, event_type: &str, version: u32) -> Option<&Step> {
        self.steps.get(event_type)?.get(&version)
    }

    /// Runs the chain from `(event_type, version)` and returns the final type, version and
    /// payload (unchanged when nothing is registered).
    ///
    /// # Errors
    /// An upcaster's error, naming the step; or a chain longer than 64 steps (registrations
    /// that loop).
    pub fn apply(
        &self,
        event_type: &str,
        version: u32,
        data: EventData,
    ) -> Result<(String, u32, EventData), String> {
        let mut event_type = event_type.to_string();
        let mut version = version;
        let mut data = data;
        for _ in 0..MAX_STEPS {
            match self.step(&event_type, version) {
                None => return Ok((event_type, version, data)),
                Some(Step::Payload(f)) => {
                    data = f(data)
                        .map_err(|e| format!("upcaster of {event_type} v{version} failed: {e}"))?;
                    version = version.checked_add(1).ok_or("schema version overflow")?;
                }
                Some(Step::Rename(to)) => event_type = to.clone(),
            }
        }
        Err(format!(
            "upcasting {event_type} v{version} took more than {MAX_STEPS} steps; \
             the registrations loop"
        ))
    }
}

/// [`Upcasters::merge`] found steps registered in both sets for the same event type and
/// schema version, so it cannot tell which applies.
///
/// Handling: a programming error in how actor types are combined, to fix in code, not to
/// retry. It means both actor types store events under the same event type name, which one
/// joined enum cannot tell apart anyway: decode each actor type with its own codec
/// (`EventCodec::new(A::upcasters())`, choosing by the event's actor type), or, when the two
/// steps are meant to be one, register it in one set only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "both sets of upcasters register a step for {}; a joined codec cannot tell whose events \
     these are",
    list(clashes)
)]
pub struct UpcasterClash {
    /// Each clashing event type and schema version, sorted.
    pub clashes: Vec<(String, u32)>,
}

fn list(clashes: &[(String, u32)]) -> String {
    clashes
        .iter()
        .map(|(event_type, version)| format!("{event_type} v{version}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: serde_json::Value) -> EventData {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn chains_apply_in_order_and_renames_continue_the_chain() {
        let u = Upcasters::new()
            .upcast("B", 2, |mut d: EventData| {
                d.insert("v3".into(), json!(true));
                Ok(d)
            })
            .upcast("A", 1, |mut d: EventData| {
                d.insert("v2".into(), json!(true));
                Ok(d)
            })
            .rename("A", 2, "B");
        let (t, v, d) = u.apply("A", 1, data(json!({}))).unwrap();
        assert_eq!((t.as_str(), v), ("B", 3));
        assert_eq!(d, data(json!({"v2": true, "v3": true})));
        // Nothing registered: unchanged.
        let (t, v, _) = u.apply("C", 7, data(json!({}))).unwrap();
        assert_eq!((t.as_str(), v), ("C", 7));
        assert!(u.handles("A", 1) && !u.handles("A", 3));
    }

    #[test]
    fn failures_and_loops_are_errors() {
        let u = Upcasters::new().upcast("A", 1, |_| Err("amount missing".into()));
        let e = u.apply("A", 1, EventData::new()).unwrap_err();
        assert!(e.contains("A v1") && e.contains("amount missing"), "{e}");
        let looped = Upcasters::new().rename("A", 1, "B").rename("B", 1, "A");
        assert!(looped
            .apply("A", 1, EventData::new())
            .unwrap_err()
            .contains("loop"));
        assert!(format!("{looped:?}").contains("A v1 -> B v1"));
    }

    #[test]
    fn merge_joins_disjoint_sets_and_chains_run_across_them() {
        let accounts = Upcasters::new().rename("MoneyIn", 1, "Deposited").upcast(
            "Deposited",
            1,
            |mut d: EventData| {
                d.insert("cents".into(), json!(100));
                Ok(d)
            },
        );
        let orders = Upcasters::new()
            .upcast("Deposited", 2, |mut d: EventData| {
                d.insert("v3".into(), json!(true));
                Ok(d)
            })
            .rename("Ordered", 1, "OrderPlaced");
        let both = accounts.merge(orders).unwrap();
        let (t, v, d) = both.apply("MoneyIn", 1, data(json!({}))).unwrap();
        assert_eq!((t.as_str(), v), ("Deposited", 3));
        assert_eq!(d, data(json!({"cents": 100, "v3": true})));
        let (t, v, _) = both.apply("Ordered", 1, data(json!({}))).unwrap();
        assert_eq!((t.as_str(), v), ("OrderPlaced", 1));
        // Merging nothing changes nothing, on either side.
        let both = both.merge(Upcasters::new()).unwrap();
        let both = Upcasters::new().merge(both).unwrap();
        assert_eq!(
            format!("{both:?}"),
            "Upcasters { steps: [\"Deposited v1 -> v2\", \"Deposited v2 -> v3\", \
             \"MoneyIn v1 -> Deposited v1\", \"Ordered v1 -> OrderPlaced v1\"] }"
        );
    }

    #[test]
    fn merge_refuses_the_same_type_and_version_in_both() {
        let reshape = || Upcasters::new().upcast("Deposited", 1, Ok);
        // Two payload upcasters, a payload upcaster and a rename, two different renames: each
        // clashes, and every clash is listed.
        let e = reshape()
            .rename("Opened", 1, "AccountOpened")
            .rename("Closed", 2, "AccountClosed")
            .merge(
                reshape()
                    .rename("Opened", 1, "OrderOpened")
                    .upcast("Closed", 2, Ok)
                    // Other versions of the same types do not clash.
                    .upcast("Opened", 2, Ok),
            )
            .unwrap_err();
        assert_eq!(
            e.clashes,
            [
                ("Closed".to_string(), 2),
                ("Deposited".to_string(), 1),
                ("Opened".to_string(), 1)
            ]
        );
        let message = e.to_string();
        assert!(
            message.contains("Closed v2, Deposited v1, Opened v1"),
            "{message}"
        );
        // The same rename in both means the same thing: no clash.
        let both = Upcasters::new()
            .rename("MoneyIn", 1, "Deposited")
            .merge(Upcasters::new().rename("MoneyIn", 1, "Deposited"))
            .unwrap();
        assert!(both.handles("MoneyIn", 1));
    }
}
