//! Golden files of the cluster's wire format (`tests/golden/wire-<N>/`).
//!
//! The rule: a released golden file is never edited. Every directory must keep decoding to the
//! same messages, so that a node of this release understands one of the releases it may share
//! a cluster with during a rolling upgrade; the newest directory must also be exactly what the
//! current code writes, so that no format change goes unnoticed. A format change adds a
//! directory and a wire version; removing a directory is the decision to stop reading a
//! version.
//!
//! The expected messages are written out below, not produced by the encoder under test.
//! `AETHER_BLESS_GOLDEN=1` rewrites the newest directory from what the code writes; older
//! directories are never written. Without it, the test never writes.

use aether_actor::{CommandMeta, RetiredError};
use aether_testkit::golden::GoldenFiles;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::assignment::AssignmentTable;
use crate::leader::LeaderLease;
use crate::routing::{
    decode_request, decode_versioned, encode, encode_at, ActorRequest, ActorRequestOut,
    ActorResponse, ActorResponseOut, Heartbeat, Leave, RemoteError, WireRange, MIN_WIRE_VERSION,
    WIRE_VERSION,
};

/// The golden files, named by wire version; the current directory is this release's.
fn golden() -> GoldenFiles {
    GoldenFiles::with_current(env!("CARGO_MANIFEST_DIR"), dir(WIRE_VERSION))
}

fn dir(version: u16) -> String {
    format!("wire-{version}")
}

#[track_caller]
fn read(version: u16, file: &str) -> Vec<u8> {
    golden().read(&dir(version), file)
}

/// Checks that the newest directory's `file` is exactly `bytes`, after writing it when
/// blessing.
#[track_caller]
fn pin(file: &str, bytes: &[u8]) {
    golden().pin(file, bytes);
}

/// Checks that `file` of wire version `version` decodes to `expected`, in that version.
fn reads<T: DeserializeOwned + PartialEq + std::fmt::Debug>(
    version: u16,
    file: &str,
    expected: &T,
) {
    let bytes = read(version, file);
    let (_, got) = decode_versioned::<T>(&bytes)
        .unwrap_or_else(|e| panic!("wire-{version}/{file} no longer decodes: {e}"));
    assert_eq!(&got, expected, "wire-{version}/{file}");
}

fn meta() -> CommandMeta {
    CommandMeta::new().command_id("cmd-1").user_id("ada")
}

fn request(shard: Option<u32>) -> ActorRequest {
    ActorRequest {
        actor_type: "account".into(),
        actor_id: "acc-1".into(),
        shard,
        epoch: 9,
        meta: meta(),
        command: json!({"Deposit": {"amount": 5}}),
        refresh: false,
    }
}

fn refresh() -> ActorRequest {
    ActorRequest {
        actor_type: "account".into(),
        actor_id: "acc-1".into(),
        shard: Some(17),
        epoch: 9,
        meta: CommandMeta::default(),
        command: serde_json::Value::Null,
        refresh: true,
    }
}

fn heartbeat(wire: Option<WireRange>) -> Heartbeat {
    Heartbeat {
        node_id: "node-a".into(),
        incarnation: "7f1c".into(),
        seq: 42,
        wire,
    }
}

fn leave() -> Leave {
    Leave {
        node_id: "node-a".into(),
        incarnation: "7f1c".into(),
    }
}

fn table() -> AssignmentTable {
    AssignmentTable {
        term: 4,
        leader: "node-a".into(),
        members: vec!["node-a".into(), "node-b".into()],
        shard_count: 2,
        replication_factor: 1,
        shards: vec![vec!["node-a".into()], vec!["node-b".into()]],
    }
}

fn lease() -> LeaderLease {
    LeaderLease {
        node_id: "node-a".into(),
        incarnation: "7f1c".into(),
        term: 4,
    }
}

fn responses() -> Vec<(&'static str, ActorResponse)> {
    vec![
        (
            "reply.json",
            ActorResponse::Reply {
                reply: json!({"balance": 5}),
                version: 3,
                already_applied: false,
            },
        ),
        (
            "reply-already-applied.json",
            ActorResponse::Reply {
                reply: json!({"balance": 5}),
                version: 3,
                already_applied: true,
            },
        ),
        (
            "rejected.json",
            ActorResponse::Rejected {
                error: json!({"InsufficientFunds": {"balance": 5}}),
            },
        ),
        (
            "not-owner.json",
            ActorResponse::NotOwner {
                epoch: 10,
                owner: Some("node-b".into()),
            },
        ),
        (
            "error.json",
            ActorResponse::Error {
                error: RemoteError::Conflict {
                    actor_id: "acc-1".into(),
                    attempts: 4,
                    attempted_version: 3,
                    current_version: 5,
                },
            },
        ),
    ]
}

/// What every node reads, in every version directory.
fn common_messages_read(version: u16) {
    reads(version, "leave.json", &leave());
    reads(version, "assignment.json", &table());
    reads(version, "lease.json", &lease());
    reads(version, "refresh.json", &refresh());
    for (file, response) in responses() {
        reads(version, file, &response);
    }
}

#[test]
fn the_previous_release_s_messages_are_still_read() {
    let v = MIN_WIRE_VERSION;
    assert_eq!(
        v, 2,
        "dropping version 2 is a decision: update this test and the docs"
    );
    // Heartbeats of that release announce no versions.
    reads(v, "heartbeat.json", &heartbeat(None));
    reads(v, "request.json", &request(Some(17)));
    let bytes = read(v, "request.json");
    let (version, req) = decode_request(&bytes, v).expect("a version-2 request");
    assert_eq!(
        (version, req.shard, req.actor_id.as_str()),
        (2, Some(17), "acc-1")
    );
    common_messages_read(v);
}

#[test]
fn this_release_writes_its_golden_files_and_reads_them() {
    let v = WIRE_VERSION;
    let range = WireRange {
        min: MIN_WIRE_VERSION,
        max: WIRE_VERSION,
    };
    let meta = meta();
    let command = json!({"Deposit": {"amount": 5}});
    let out = |shard, speaks| ActorRequestOut {
        actor_type: "account",
        actor_id: "acc-1",
        shard,
        epoch: 9,
        meta: &meta,
        command: &command,
        speaks,
    };
    // Requests in the newest version, and in the oldest for nodes that speak only it (saying
    // which version the answer may use).
    pin("request.json", &encode_at(v, &out(None, None)).unwrap());
    pin(
        "request-to-version-2.json",
        &encode_at(MIN_WIRE_VERSION, &out(Some(17), Some(v))).unwrap(),
    );
    // What version 3 added to answers, and its form for a version-2 sender.
    let retired = ActorResponse::Error {
        error: RemoteError::Retired {
            error: RetiredError {
                actor_type: "account".into(),
                actor_id: "acc-1".into(),
                version: 7,
            },
        },
    };
    pin("error-retired.json", &encode(&retired).unwrap());
    reads(v, "error-retired.json", &retired);
    assert!(matches!(
        retired.clone().for_version(MIN_WIRE_VERSION),
        ActorResponse::Error {
            error: RemoteError::Other { .. }
        }
    ));
    assert_eq!(retired.clone().for_version(v), retired);
    pin("refresh.json", &encode_at(v, &refresh()).unwrap());
    // What every node reads goes out in the oldest version.
    pin("heartbeat.json", &encode(&heartbeat(Some(range))).unwrap());
    pin("leave.json", &encode(&leave()).unwrap());
    pin("assignment.json", &encode(&table()).unwrap());
    pin("lease.json", &encode(&lease()).unwrap());
    for (file, response) in responses() {
        pin(file, &encode(&response).unwrap());
    }
    // The forms the owner writes straight from the actor's types are the same bytes.
    let reply = json!({"balance": 5});
    let typed: ActorResponseOut<'_, serde_json::Value, ()> = ActorResponseOut::Reply {
        reply: &reply,
        version: 3,
        already_applied: false,
    };
    pin("reply.json", &encode(&typed).unwrap());

    reads(v, "heartbeat.json", &heartbeat(Some(range)));
    reads(v, "request.json", &request(None));
    reads(MIN_WIRE_VERSION, "request.json", &request(Some(17)));
    reads(v, "request-to-version-2.json", &request(Some(17)));
    let to_old = read(v, "request-to-version-2.json");
    let (version, req) = decode_request(&to_old, MIN_WIRE_VERSION).expect("a version-2 request");
    assert_eq!(req.answer_version(version), v);
    let newest = read(v, "request.json");
    let (version, req) = decode_request(&newest, v).expect("a request");
    assert_eq!((version, req.shard), (v, None));
    // A node held at the previous version refuses the newest request, typed.
    assert!(decode_request(&newest, MIN_WIRE_VERSION).is_err());
    common_messages_read(v);
}

#[test]
fn every_golden_file_is_checked() {
    // A file added to a directory without a check here would pin nothing.
    let checked_2 = [
        "heartbeat.json",
        "request.json",
        "leave.json",
        "assignment.json",
        "lease.json",
        "refresh.json",
        "reply.json",
        "reply-already-applied.json",
        "rejected.json",
        "not-owner.json",
        "error.json",
    ];
    for version in [MIN_WIRE_VERSION, WIRE_VERSION] {
        let files: Vec<String> = golden()
            .files(&dir(version))
            .into_iter()
            .filter(|n| n.ends_with(".json"))
            .collect();
        let mut expected: Vec<String> = checked_2.iter().map(|s| s.to_string()).collect();
        if version == WIRE_VERSION {
            expected.push("request-to-version-2.json".into());
            expected.push("error-retired.json".into());
        }
        expected.sort();
        assert_eq!(files, expected, "wire-{version}");
    }
}
