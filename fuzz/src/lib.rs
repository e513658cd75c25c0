//! Bodies of the fuzz targets of Aether, one plain function per target.
//!
//! Each function takes the fuzzer's bytes, feeds them to a decoder that reads bytes from the
//! network or the stream, and asserts the decoder's contract: any input gives a value or a
//! typed error, never a panic, and whatever decodes re-encodes to something that decodes to an
//! equal value. The targets in `fuzz_targets/` call these under libFuzzer (nightly); the test in
//! `tests/corpus.rs` calls them on stable over the seed corpus and mutated inputs, so the
//! bodies keep compiling and keep meaning something without nightly.
//!
//! Inputs that need several fields (an actor id and a payload, a sequence of messages) are
//! split on newlines and tabs rather than decoded from a binary layout: the seeds stay
//! readable and the fuzzer's text mutations stay meaningful.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::Duration;

use aether_actor::{DomainEvent, EventCodec, Upcasters};
use aether_bus::fuzzing::{encode_frame, parse_message, GapTracker, MAX_TRACKED_SOURCES};
use aether_cluster::routing::{
    self, ActorRequest, ActorResponse, Heartbeat, LeaderLease, Leave, WireError,
};
use aether_cluster::{Assignment, AssignmentTable};
use aether_core::{
    is_wildcard_pattern, match_namespace_pattern, validate_namespace, Event, Snapshot,
};
use aether_nats::subject::{decode_actor_id, encode_actor_id};
use aether_nats::subject::{decode_namespace, pattern_subject, validate_prefix};
use aether_placement::{diff, rebalance, Membership, MembershipChange};
use aether_store::fuzzing::{decode_message, encode_message};
use serde_json::Value;

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary in `fuzz_targets/` and its corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("event_json", event_json),
    ("snapshot_json", snapshot_json),
    ("stored_message", stored_message),
    ("stored_batch", stored_batch),
    ("actor_id_subject", actor_id_subject),
    ("namespace_subject", namespace_subject),
    ("bus_message", bus_message),
    ("cluster_envelope", cluster_envelope),
    ("cluster_membership", cluster_membership),
    ("cluster_assignment", cluster_assignment),
    ("typed_event", typed_event),
];

/// Subject prefix of the bus when the input does not bring a usable one.
const DEFAULT_PREFIX: &str = "aether.events";
/// Stream sequence given to stored messages; any value works, it must come back in errors.
const SEQUENCE: u64 = 4242;

/// Splits `data` at the first `sep`: (before, after), or (`None`, all) without one.
fn split_once(data: &[u8], sep: u8) -> (Option<&[u8]>, &[u8]) {
    match data.iter().position(|b| *b == sep) {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    }
}

/// Encodes and decodes `event` again, checking nothing is lost and the encoding is stable.
fn assert_event_round_trips(event: &Event) {
    let bytes = event.to_json_bytes().expect("a decoded event re-encodes");
    let back = Event::from_json_bytes(&bytes).expect("a re-encoded event decodes");
    assert_eq!(&back, event, "event changed through encode/decode");
    let again = back.to_json_bytes().expect("re-encodes twice");
    assert_eq!(again, bytes, "encoding of an event is not deterministic");
}

/// `Event::from_json_bytes`, as every store and bus decodes events.
///
/// Checks: no panic; a decoded event re-encodes and decodes to an equal event with the same
/// bytes; `validate` and the `EventStored` notification built from it do not panic and the
/// notification round-trips too.
pub fn event_json(data: &[u8]) {
    let Ok(event) = Event::from_json_bytes(data) else {
        return;
    };
    assert_event_round_trips(&event);
    let _ = event.validate();
    let note = event.event_stored();
    assert_eq!(note.actor_id, event.actor_id);
    assert_eq!(note.version, event.version);
    assert_event_round_trips(&note);
}

/// `Snapshot::from_json_bytes`, as the JetStream store reads stored snapshots.
///
/// Checks: no panic; a decoded snapshot re-encodes and decodes to an equal snapshot.
pub fn snapshot_json(data: &[u8]) {
    let Ok(snapshot) = Snapshot::from_json_bytes(data) else {
        return;
    };
    let bytes = snapshot
        .to_json_bytes()
        .expect("a decoded snapshot re-encodes");
    let back = Snapshot::from_json_bytes(&bytes).expect("a re-encoded snapshot decodes");
    assert_eq!(back, snapshot, "snapshot changed through encode/decode");
    let _ = back.validate();
}

/// Checks the contract of the stored-message decoder for one payload of `actor_id`.
fn check_stored_message(actor_id: &str, payload: &[u8]) {
    match decode_message(actor_id, SEQUENCE, payload) {
        Ok(events) => {
            assert!(!events.is_empty(), "a stored message decoded to no event");
            let mut prev = 0;
            for e in &events {
                assert_eq!(
                    e.actor_id, actor_id,
                    "an event of another actor got through"
                );
                assert!(
                    e.version > prev,
                    "versions do not increase within a message"
                );
                prev = e.version;
            }
            let first = payload.iter().find(|b| !b.is_ascii_whitespace());
            if first != Some(&b'[') {
                assert_eq!(
                    events.len(),
                    1,
                    "a single-event message gave several events"
                );
            }
            check_reencoded(actor_id, &events);
        }
        Err(e) => {
            assert_eq!(e.sequence, SEQUENCE, "replay error lost the sequence");
            assert_eq!(e.raw, payload, "replay error lost the raw bytes");
            assert!(!e.error.is_empty(), "replay error without a reason");
        }
    }
}

/// Encodes `events` the way the store writes them and checks the read path gives them back.
fn check_reencoded(actor_id: &str, events: &[Event]) {
    let encoded = encode_message(events).expect("decoded events re-encode");
    let back = decode_message(actor_id, SEQUENCE, &encoded.payload)
        .expect("re-encoded stored message decodes");
    assert_eq!(back, events, "stored message changed through encode/decode");
    let last = events.last().expect("not empty");
    assert_eq!(encoded.header_last_version, Some(last.version));
    if let Some(id) = &encoded.header_last_event_id {
        assert_eq!(id, &last.id, "last-event-id header names another event");
    }
}

/// The JetStream store's decoder of one stored message (a single event or a batch array).
///
/// Input: `actor id \n payload` (no newline: actor `a`, all payload). Checks: no panic; an
/// error carries the message's sequence, raw bytes and a reason; what decodes is non-empty,
/// belongs to the actor, has strictly increasing versions, is one event unless the payload is
/// an array, and re-encodes (as the store writes) to a message that decodes to the same events
/// with headers naming the last version and id.
pub fn stored_message(data: &[u8]) {
    let (actor, payload) = split_once(data, b'\n');
    let actor = actor.map_or_else(|| "a".to_string(), |a| String::from_utf8_lossy(a).into());
    check_stored_message(&actor, payload);
}

/// The store's batch encoder and decoder over arbitrary event contents.
///
/// Input: one event JSON per line. Every line that decodes as an event is moved to actor `a`
/// with versions 1, 2, 3...; the batch is encoded as the store writes it and must decode to the
/// same events. Then each line is also decoded as a whole stored message of its own actor.
pub fn stored_batch(data: &[u8]) {
    let mut batch = Vec::new();
    for line in data.split(|b| *b == b'\n').take(64) {
        if let Ok(mut e) = Event::from_json_bytes(line) {
            check_stored_message(&e.actor_id.clone(), line);
            e.actor_id = "a".into();
            e.version = batch.len() as u64 + 1;
            batch.push(e);
        }
    }
    if !batch.is_empty() {
        check_reencoded("a", &batch);
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Actor id <-> subject token of the JetStream store.
///
/// Checks: any string encodes to a token of `[A-Za-z0-9_-]` only, of the base64 length, that
/// decodes back to the string; any string that decodes as a token is the one canonical
/// encoding of what it decodes to (so two tokens never name one actor).
pub fn actor_id_subject(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let token = encode_actor_id(&text);
    assert!(
        token.bytes().all(is_token_char),
        "token {token:?} is not subject-safe"
    );
    assert_eq!(token.len(), (text.len() * 4).div_ceil(3));
    assert_eq!(decode_actor_id(&token).ok().as_deref(), Some(text.as_ref()));
    if let Ok(id) = decode_actor_id(&text) {
        assert_eq!(encode_actor_id(&id), text, "non-canonical token accepted");
    }
}

/// Namespace <-> subject of the NATS bus.
///
/// Input: `prefix \n text` (the default prefix when there is no newline or the prefix is not
/// valid). Checks, with `text` both as a namespace and as a received subject: a namespace that
/// encodes gives a subject under the prefix that decodes back to it, and equals the pattern
/// subject of the same (wildcard-free) pattern; a subject that decodes gives a namespace that
/// re-encodes to the same subject whenever it is publishable; nothing panics.
pub fn namespace_subject(data: &[u8]) {
    let (prefix, rest) = split_once(data, b'\n');
    let prefix = prefix
        .and_then(|p| std::str::from_utf8(p).ok())
        .filter(|p| validate_prefix(p).is_ok())
        .unwrap_or(DEFAULT_PREFIX);
    let text = String::from_utf8_lossy(rest);
    check_namespace(prefix, &text);
    check_subject(prefix, &text);
    check_subject(prefix, &format!("{prefix}.{text}"));
    if let Ok(subject) = pattern_subject(prefix, &text) {
        assert!(subject.starts_with(prefix));
        if !is_wildcard_pattern(&text) {
            assert_eq!(
                aether_nats::subject::namespace_subject(prefix, &text).ok(),
                Some(subject)
            );
        }
    }
}

fn check_namespace(prefix: &str, namespace: &str) {
    let Ok(subject) = aether_nats::subject::namespace_subject(prefix, namespace) else {
        return;
    };
    let tail = subject
        .strip_prefix(prefix)
        .and_then(|s| s.strip_prefix('.'))
        .expect("namespace subject is under the prefix");
    assert!(
        tail.bytes()
            .all(|b| is_token_char(b) || b == b'%' || b == b'.'),
        "subject {subject:?} holds a character NATS treats specially"
    );
    assert_eq!(
        tail.split('.').count(),
        namespace.split('.').count(),
        "encoding changed the number of tokens"
    );
    assert_eq!(
        decode_namespace(prefix, &subject).as_deref(),
        Some(namespace),
        "namespace did not survive its subject"
    );
}

fn check_subject(prefix: &str, subject: &str) {
    let Some(namespace) = decode_namespace(prefix, subject) else {
        return;
    };
    assert!(
        validate_namespace(&namespace).is_ok(),
        "{subject:?} decoded to the unpublishable namespace {namespace:?}"
    );
    // Only the length limit may stop a decoded namespace from encoding again (the limit
    // applies to what this bus publishes, not to what it receives).
    match aether_nats::subject::namespace_subject(prefix, &namespace) {
        Ok(again) => assert_eq!(again, subject, "two subjects decode to one namespace"),
        Err(_) => assert!(subject.len() > 2048, "decoded namespace does not encode"),
    }
}

/// What the bus does with each received message before handing it to a subscriber: decode
/// the namespace from the subject, take the message apart (a frame, or JSON with the publisher
/// and sequence headers), count gaps from its origin, decode the event.
///
/// Input: one message per line, `subject \t publisher \t sequence \t payload`; the publisher
/// and sequence fields are the headers' values, and the payload may be a frame. Subjects are
/// taken as received and also under the default prefix. Checks: a payload that is not a frame
/// takes its origin from the headers; a frame that parses encodes back to the same bytes; the
/// gap tracker reports exactly the messages skipped since the last one seen from the same
/// publisher and namespace (checked against a model), never remembers more than its bound;
/// decoded namespaces and events behave as in `namespace_subject` and `event_json`; the
/// subscription filter (`match_namespace_pattern`) does not panic on what decodes.
pub fn bus_message(data: &[u8]) {
    let mut tracker = GapTracker::default();
    let mut model: HashMap<(String, String), u64> = HashMap::new();
    for line in data.split(|b| *b == b'\n').take(256) {
        let mut fields = line.splitn(4, |b| *b == b'\t');
        let subject = String::from_utf8_lossy(fields.next().unwrap_or_default());
        let publisher = fields.next().map(String::from_utf8_lossy);
        let seq_header = fields.next().map(String::from_utf8_lossy);
        let payload = fields.next().unwrap_or_default();

        let namespace = decode_namespace(DEFAULT_PREFIX, &subject)
            .or_else(|| decode_namespace(DEFAULT_PREFIX, &format!("{DEFAULT_PREFIX}.{subject}")));
        let Some(namespace) = namespace else {
            continue;
        };
        check_subject(DEFAULT_PREFIX, &format!("{DEFAULT_PREFIX}.{subject}"));
        let Ok((origin, json)) =
            parse_message(payload, publisher.as_deref(), seq_header.as_deref())
        else {
            assert_eq!(
                payload.first(),
                Some(&0xAE),
                "only a frame can be unreadable"
            );
            continue;
        };
        if payload.first() == Some(&0xAE) {
            let (p, seq) = origin.clone().expect("a frame names its origin");
            if let Ok(event) = Event::from_json_bytes(&json) {
                let again = encode_frame(&p, seq, &event).expect("re-encode a frame");
                let (origin_again, json_again) =
                    parse_message(&again, None, None).expect("parse a frame just made");
                assert_eq!(origin_again, Some((p, seq)));
                assert_eq!(Event::from_json_bytes(&json_again).ok(), Some(event));
            }
        } else {
            assert_eq!(json, payload, "JSON is passed through as it came");
            let expected = match (publisher.as_deref(), seq_header.as_deref()) {
                (Some(p), Some(s)) => Some((p.to_string(), s.parse::<u64>().unwrap_or(0))),
                (Some(p), None) => Some((p.to_string(), 0)),
                _ => None,
            };
            assert_eq!(origin, expected);
        }
        if let Some((p, seq)) = origin.filter(|(_, seq)| *seq > 0) {
            let missed = tracker.observe(&p, &namespace, seq);
            assert_eq!(missed, model_observe(&mut model, &p, &namespace, seq));
            assert!(tracker.tracked() <= MAX_TRACKED_SOURCES);
            assert_eq!(tracker.tracked(), model.len());
        }
        if let Ok(event) = Event::from_json_bytes(&json) {
            assert_event_round_trips(&event);
            for pattern in ["*", "orders.>", "*.*"] {
                let _ = match_namespace_pattern(pattern, &namespace);
            }
            assert!(match_namespace_pattern(">", &namespace));
            assert!(match_namespace_pattern(&namespace, &namespace));
        }
    }
}

/// The gap tracker's rule written out independently: missed = seq - last - 1 when it moves
/// forward, 0 otherwise; the memory is reset when it reaches its bound.
fn model_observe(
    model: &mut HashMap<(String, String), u64>,
    publisher: &str,
    namespace: &str,
    seq: u64,
) -> u64 {
    if model.len() >= MAX_TRACKED_SOURCES {
        model.clear();
    }
    let key = (publisher.to_string(), namespace.to_string());
    match model.get(&key).copied() {
        Some(last) if seq > last => {
            model.insert(key, seq);
            seq - last - 1
        }
        Some(_) => 0,
        None => {
            model.insert(key, seq);
            0
        }
    }
}

/// Decodes `bytes` as an envelope of `T`; when it decodes, re-encodes and decodes again.
fn envelope_round_trip<T>(bytes: &[u8]) -> Result<T, WireError>
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let body = routing::decode::<T>(bytes)?;
    let again = routing::encode(&body).expect("a decoded body re-encodes");
    let back = routing::decode::<T>(&again).expect("a re-encoded envelope decodes");
    assert_eq!(back, body, "cluster message changed through encode/decode");
    Ok(body)
}

/// The versioned routing envelope of the cluster, with the actor request and response bodies
/// (commands, replies and rejections as arbitrary JSON).
///
/// Checks: no panic; an input that decodes is a JSON object whose `v` is a wire version this
/// release reads, an `UnsupportedVersion` error names the `v` the input holds; every decoded body
/// (`ActorRequest`, `ActorResponse` with its `RemoteError`s) round-trips.
pub fn cluster_envelope(data: &[u8]) {
    let as_value = serde_json::from_slice::<Value>(data).ok();
    let version = as_value.as_ref().and_then(|v| v.get("v")).cloned();
    match envelope_round_trip::<Value>(data) {
        Ok(_) => {
            if let Some(v) = &version {
                assert!(v.as_u64().is_some_and(routing::reads_version), "{v}");
            }
        }
        Err(WireError::UnsupportedVersion { found }) => {
            assert!(!routing::reads_version(found));
            if let Some(v) = &version {
                assert_eq!(
                    v.as_u64(),
                    Some(found),
                    "reported version is not the input's"
                );
            }
        }
        Err(_) => {}
    }
    let _ = envelope_round_trip::<ActorRequest>(data);
    if let Ok(ActorResponse::Error { error }) = envelope_round_trip::<ActorResponse>(data) {
        let _ = error.into_command_error::<()>("n");
    }
}

/// Heartbeats and leave notices from the members subjects, driving a membership view.
///
/// Input: one event per line, `op delta_ms json`: `h` a heartbeat envelope, `l` a leave
/// envelope, `s` a sweep, each `delta_ms` after the previous event. Checks: bodies round-trip;
/// after a heartbeat its node is alive unless it is a late one from an incarnation that left;
/// a `Joined` change is reported exactly when the node was not alive before; a `Left` change
/// only for a node that was alive; after a sweep no member silent for longer than the timeout
/// is alive; the local node is always alive and `alive()` is sorted.
pub fn cluster_membership(data: &[u8]) {
    const LOCAL: &str = "local";
    let timeout = Duration::from_millis(1000);
    let mut view = Membership::new(LOCAL, timeout);
    let start = std::time::Instant::now();
    let mut now = start;
    for line in data.split(|b| *b == b'\n').take(256) {
        let Some((&op, rest)) = line.split_first() else {
            continue;
        };
        let (delta, json) = split_once(rest, b' ');
        let delta = delta
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<u32>().ok())
            .unwrap_or(0);
        now += Duration::from_millis(u64::from(delta));
        match op {
            b'h' => {
                let Ok(hb) = envelope_round_trip::<Heartbeat>(json) else {
                    continue;
                };
                let was_alive = view.is_alive(&hb.node_id);
                let late = view.member(&hb.node_id).is_some_and(|m| {
                    m.status == aether_placement::MemberStatus::Left
                        && m.incarnation == hb.incarnation
                });
                let change = view.observe_heartbeat(&hb.node_id, &hb.incarnation, now);
                if hb.node_id == LOCAL || late {
                    assert_eq!(change, None);
                } else {
                    assert!(view.is_alive(&hb.node_id));
                    let joined = Some(MembershipChange::Joined(hb.node_id.clone()));
                    assert_eq!(change == joined, !was_alive);
                }
            }
            b'l' => {
                let Ok(leave) = envelope_round_trip::<Leave>(json) else {
                    continue;
                };
                let was_alive = view.is_alive(&leave.node_id);
                if let Some(MembershipChange::Left(n)) =
                    view.observe_leave(&leave.node_id, &leave.incarnation)
                {
                    assert_eq!(n, leave.node_id);
                    assert!(was_alive && !view.is_alive(&n));
                }
            }
            b's' => {
                for c in view.sweep(now) {
                    let MembershipChange::Failed(n) = c else {
                        panic!("sweep reported {c:?}");
                    };
                    assert!(!view.is_alive(&n));
                }
                for n in view.alive() {
                    if let Some(m) = view.member(&n) {
                        assert!(now.saturating_duration_since(m.last_seen) <= timeout);
                    }
                }
            }
            _ => {}
        }
        let alive = view.alive();
        assert!(alive.iter().any(|n| n == LOCAL));
        assert!(
            alive.windows(2).all(|w| w[0] <= w[1]),
            "alive() is not sorted"
        );
    }
}

/// The assignment table and the leader lease as read from the cluster's key-value bucket.
///
/// Checks: both round-trip; the lookups of an [`Assignment`] built from a decoded table agree
/// with each other (owner = primary of the actor's shard, shard below the shard count,
/// `primaries_of` lists exactly the shards a node is primary of); rebalancing the decoded table
/// over its members (as a new leader does) keeps the number of rows, gives each row distinct
/// live nodes, `min(replication, live)` of them, and is stable when applied again.
pub fn cluster_assignment(data: &[u8]) {
    let _ = envelope_round_trip::<LeaderLease>(data);
    let Ok(table) = envelope_round_trip::<AssignmentTable>(data) else {
        return;
    };
    let assignment = Assignment { epoch: 1, table };
    let count = assignment.table.shard_count;
    for actor in ["a", "order-1", "", "\u{0}"] {
        let shard = assignment.shard_of(actor);
        assert!(shard < count.max(1));
        assert_eq!(assignment.owner_of(actor), assignment.primary(shard));
    }
    let _ = assignment.is_complete();
    for node in assignment.table.members.iter().take(8) {
        for s in assignment.primaries_of(node) {
            assert_eq!(assignment.primary(s), Some(node.as_str()));
        }
    }
    // Bounded so one input cannot spend seconds in a quadratic rebalance.
    let table = &assignment.table;
    if table.shards.len() > 512 || table.members.len() > 32 {
        return;
    }
    let rf = table.replication_factor.clamp(1, 4);
    let next = rebalance(&table.shards, &table.members, rf);
    assert_eq!(next.len(), table.shards.len());
    let mut live: Vec<&String> = table.members.iter().collect();
    live.sort();
    live.dedup();
    let per_row = (rf as usize).min(live.len());
    for row in &next {
        assert_eq!(
            row.len(),
            per_row,
            "row {row:?} has the wrong number of nodes"
        );
        for (i, n) in row.iter().enumerate() {
            assert!(live.contains(&n), "{n:?} is not a live member");
            assert!(!row[..i].contains(n), "{n:?} twice in one row");
        }
    }
    assert_eq!(
        rebalance(&next, &table.members, rf),
        next,
        "rebalance is not stable"
    );
    let _ = diff(&table.shards, &next);
}

/// The event type [`typed_event`] decodes into: every payload shape serde handles (struct,
/// unit and newtype variants, optional and nested fields, a renamed variant), at schema
/// version 2 for `Deposited`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FuzzEvent {
    /// A struct variant with a nested, optional field.
    Opened {
        /// Any string.
        owner: String,
        /// Nested data.
        #[serde(default)]
        tags: Option<Vec<String>>,
    },
    /// Version 2: cents (version 1 stored whole units in `amount`, and was called `MoneyIn`).
    Deposited {
        /// Cents.
        cents: i64,
    },
    /// A unit variant.
    Closed,
    /// A newtype variant around a struct, under a stable name.
    #[serde(rename = "Noted")]
    Note(FuzzNote),
}

/// The payload of [`FuzzEvent::Note`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FuzzNote {
    /// Any float.
    pub weight: f64,
}

impl DomainEvent for FuzzEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened { .. } => "Opened",
            Self::Deposited { .. } => "Deposited",
            Self::Closed => "Closed",
            Self::Note(_) => "Noted",
        }
    }
    fn schema_version(&self) -> u32 {
        match self {
            Self::Deposited { .. } => 2,
            _ => 1,
        }
    }
}

/// `EventCodec::decode` with upcasters (a rename and a payload upcaster that can fail), as the
/// typed actor runtime, replays and projections read stored events. Input: a stored event's
/// JSON.
///
/// Checks: no panic; an event that decodes re-encodes (at the current schema version) to a
/// stored event that decodes to an equal value; a decoding error names the event's actor,
/// version, id and type.
pub fn typed_event(data: &[u8]) {
    let Ok(event) = Event::from_json_bytes(data) else {
        return;
    };
    let codec = EventCodec::<FuzzEvent>::new(
        Upcasters::new()
            .rename("MoneyIn", 1, "Deposited")
            .upcast("Deposited", 1, |mut d| {
                let units = d
                    .remove("amount")
                    .and_then(|v| v.as_i64())
                    .ok_or("amount missing")?;
                let cents = units.checked_mul(100).ok_or("amount overflows")?;
                d.insert("cents".into(), Value::from(cents));
                Ok(d)
            }),
    );
    match codec.decode(&event) {
        Ok(typed) => {
            let encoded = codec.encode(&typed).expect("a decoded event encodes");
            assert_eq!(encoded.schema_version, typed.schema_version());
            let stored = encoded.into_event(&event.actor_id, event.version.max(1));
            let back = codec.decode(&stored).expect("a re-encoded event decodes");
            // NaN never equals itself; compare the encodings then.
            if back != typed {
                assert_eq!(
                    serde_json::to_value(&back).ok(),
                    serde_json::to_value(&typed).ok(),
                    "typed event changed through its stored form"
                );
            }
        }
        Err(e) => {
            assert_eq!(e.actor_id, event.actor_id);
            assert_eq!(e.version, event.version);
            assert_eq!(e.event_id, event.id);
            assert_eq!(e.event_type, event.event_type);
            assert!(!e.reason.is_empty());
        }
    }
}
