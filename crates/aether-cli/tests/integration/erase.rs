//! `aether erase` against a real nats-server: personal fields saved through a
//! `PrivateStore` over the JetStream store with its keys in a `NatsKeyStore`; the erasure
//! refused without `--yes`, for malformed and unknown subjects and without a key bucket, with
//! nothing written; with `--yes`, `events`, `tail --source store` and the dashboard show the
//! subject's fields as erased and every other subject's sealed, never in clear; and an erasure
//! killed with SIGKILL at any point is finished by running the command again.

use std::process::{Command as StdCommand, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aether_core::{ActorKey, Event, EventStore};
use aether_nats::Connection;
use aether_privacy::{KeyState, KeyStore, KeyStoreConfig, NatsKeyStore, Personal, PrivateStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::actor_types::{lines_of, read_until, wait_line};
use crate::nats::{aether, assert_one_line_error, stdout, BIN};

const NS: &str = "privacy";
/// What the application wrote in clear; no tool may ever show it.
const EMAIL: &str = "ada@example.org";
const PHONE: &str = "+44 20 7946 0000";

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

/// `aether erase SUBJECT [extra...] --namespace NS --nats URL`.
async fn erase(url: &str, subject: &str, extra: &[&str]) -> Output {
    let mut args = vec!["erase".to_string(), subject.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--namespace", NS, "--nats", url].map(String::from));
    run(args).await
}

/// `aether events member-1 --type member --namespace NS --nats URL [extra...]`.
async fn events(url: &str, actor: &str, extra: &[&str]) -> Output {
    let mut args: Vec<String> = ["events", actor, "--type", "member", "--namespace", NS]
        .map(String::from)
        .into();
    args.extend(["--nats", url].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    run(args).await
}

/// A key store of its own, trusting nothing it read before: what the bucket holds now.
async fn fresh_lookup(url: &str, subject: &str) -> KeyState {
    let connection = Connection::from(async_nats::connect(url).await.unwrap());
    let keys = NatsKeyStore::open_existing(
        &connection,
        KeyStoreConfig::default()
            .namespace(NS)
            .cache_ttl(Duration::ZERO),
    )
    .await
    .unwrap()
    .expect("the key bucket exists");
    keys.lookup(subject).await.unwrap()
}

struct Setup {
    server: NatsServer,
    raw: Arc<JetStreamEventStore>,
    private: PrivateStore<JetStreamEventStore>,
}

/// The JetStream store of [`NS`] behind a private store whose keys are in the namespace's
/// key bucket.
async fn setup() -> Setup {
    let server = NatsServer::start().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let raw = Arc::new(
        JetStreamEventStore::new(client.clone(), JetStreamConfig::default().namespace(NS))
            .await
            .unwrap(),
    );
    // Trusting nothing it read before, so that it reads an erasure made by `aether erase`
    // at once (by default, within the cache's 5 s).
    let keys = NatsKeyStore::open(
        &Connection::from(client),
        KeyStoreConfig::default()
            .namespace(NS)
            .cache_ttl(Duration::ZERO),
    )
    .await
    .unwrap();
    let private = PrivateStore::new(raw.clone(), Arc::new(keys) as Arc<dyn KeyStore>);
    Setup {
        server,
        raw,
        private,
    }
}

/// An event of `member/<actor>` with a personal field of `subject` and one of `other`.
fn registered(actor: &str, subject: &str, other: &str) -> Event {
    Event::new("Registered", actor, 1)
        .with_actor_type("member")
        .with_field(
            "email",
            serde_json::to_value(Personal::new(subject, EMAIL.to_string())).unwrap(),
        )
        .with_field(
            "phone",
            serde_json::to_value(Personal::new(other, PHONE.to_string())).unwrap(),
        )
        .with_field("plan", "pro")
}

fn json(data: &aether_core::EventData) -> String {
    serde_json::to_string(data).unwrap()
}

/// No clear personal data in `text`.
fn assert_no_clear_value(text: &str) {
    assert!(!text.contains(EMAIL) && !text.contains(PHONE), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_subject_reads_as_erased_in_events_tails_and_the_dashboard() {
    let Setup {
        server,
        raw,
        private,
    } = setup().await;
    let url = server.url();
    private
        .save_event(&registered("member-1", "person-1", "person-2"))
        .await
        .unwrap();
    // The application reads its data back; the stream holds ciphertext.
    let read = private
        .events_of(ActorKey::new("member", "member-1"), 1)
        .await
        .unwrap();
    assert!(json(&read[0].data).contains(EMAIL));
    let stored = raw
        .events_of(ActorKey::new("member", "member-1"), 1)
        .await
        .unwrap();
    assert_no_clear_value(&json(&stored[0].data));

    // Before: both fields sealed, never opened.
    let out = events(&url, "member-1", &["--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert_no_clear_value(&text);
    assert_eq!(text.matches("\"sealed\":").count(), 2, "{text}");
    assert!(!text.contains("\"erased\""), "{text}");

    // Without --yes: refused, says what it would do, writes nothing.
    let out = erase(&url, "person-1", &[]).await;
    assert_one_line_error(&out, "--yes");
    assert_one_line_error(
        &out,
        "would delete its key from key bucket AETHER_KEYS_privacy",
    );
    assert!(matches!(
        fresh_lookup(&url, "person-1").await,
        KeyState::Active(_)
    ));

    // Erased.
    let out = erase(&url, "person-1", &["--yes"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "erased data subject person-1\n");
    assert_eq!(fresh_lookup(&url, "person-1").await, KeyState::Erased);
    assert!(matches!(
        fresh_lookup(&url, "person-2").await,
        KeyState::Active(_)
    ));
    // The application reads it as erased; the other subject's field as it was.
    let read = private
        .events_of(ActorKey::new("member", "member-1"), 1)
        .await
        .unwrap();
    let email: Personal<String> = serde_json::from_value(read[0].data["email"].clone()).unwrap();
    assert!(email.is_erased());
    assert!(json(&read[0].data).contains(PHONE));

    // `events`, as JSON and as a table: erased, the other field sealed, the rest as it was.
    let out = events(&url, "member-1", &["--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert_no_clear_value(&text);
    let event: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        event["data"]["email"],
        serde_json::json!({"$personal": {"subject": "person-1", "erased": true}}),
        "{text}"
    );
    assert_eq!(event["data"]["phone"]["$personal"]["subject"], "person-2");
    assert!(
        event["data"]["phone"]["$personal"]["sealed"].is_string(),
        "{text}"
    );
    assert_eq!(event["data"]["plan"], "pro");
    let out = events(&url, "member-1", &[]).await;
    assert!(out.status.success(), "{out:?}");
    let table = stdout(&out);
    assert_no_clear_value(&table);
    assert!(table.contains("\"erased\":true"), "{table}");
    assert!(table.contains("\"sealed\":"), "{table}");

    // Again: already erased, exit 0.
    let out = erase(&url, "person-1", &["--yes"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "data subject person-1 was already erased\n");
    assert_eq!(fresh_lookup(&url, "person-1").await, KeyState::Erased);

    // The dashboard: an actor's history and a live tail of the store.
    let stop = CancellationToken::new();
    let config = aether_cli::ui::DashboardConfig {
        stream: aether_cli::events::StreamArgs {
            namespace: Some(NS.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let addr = crate::ui::dashboard(&url, config, &stop).await;
    let (status, _, body) = crate::ui::get(addr, "/api/actors/member-1?type=member", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_no_clear_value(&body);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        view["events"][0]["data"]["email"],
        serde_json::json!({"$personal": {"subject": "person-1", "erased": true}}),
        "{body}"
    );
    assert!(
        view["events"][0]["data"]["phone"]["$personal"]["sealed"].is_string(),
        "{body}"
    );
    let mut sse = tokio::net::TcpStream::connect(addr).await.unwrap();
    sse.write_all(
        format!("GET /api/tail?source=store&actorType=member HTTP/1.0\r\nHost: {addr}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    assert!(
        read_until(&mut sse, &mut seen, "event: ready").await,
        "{seen}"
    );
    // And `aether tail --source store`.
    let mut child = StdCommand::new(BIN)
        .args([
            "tail",
            "--source",
            "store",
            "--actor-type",
            "member",
            "--namespace",
            NS,
            "--nats",
            &url,
        ])
        .env("NO_COLOR", "1")
        .env_remove("NATS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    let lines = lines_of(child.stdout.take().unwrap());
    let (_err, said, ready) = wait_line(err, Vec::new(), |l| l.starts_with("listening on")).await;
    assert!(ready, "tail never said it was listening: {said:?}");

    // The stored (sealed) fields copied into another actor's event, as a migration would:
    // the erased subject's field is erased wherever it is.
    let mut copy = Event::new("Imported", "member-2", 1).with_actor_type("member");
    copy.data = stored[0].data.clone();
    raw.save_event(&copy).await.unwrap();

    assert!(
        read_until(&mut sse, &mut seen, "\"eventType\":\"Imported\"").await,
        "{seen}"
    );
    assert_no_clear_value(&seen);
    let data_line = seen
        .lines()
        .find(|l| l.starts_with("data:") && l.contains("Imported"))
        .unwrap();
    let event: serde_json::Value =
        serde_json::from_str(data_line.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(
        event["data"]["email"]["$personal"]["erased"], true,
        "{seen}"
    );
    assert!(
        event["data"]["phone"]["$personal"]["sealed"].is_string(),
        "{seen}"
    );
    stop.cancel();

    let (_lines, printed, found) = wait_line(lines, Vec::new(), |l| l.contains("Imported")).await;
    assert!(found, "the tail never printed the event: {printed:?}");
    let line = printed.last().unwrap();
    assert_no_clear_value(line);
    assert!(line.contains("\"erased\":true"), "{line}");
    assert!(line.contains("\"sealed\":"), "{line}");
    child.kill().unwrap();
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_refuses_bad_and_unknown_subjects_and_a_namespace_without_keys() {
    let Setup {
        server, private, ..
    } = setup().await;
    let url = server.url();
    private
        .save_event(&registered("member-1", "person-1", "person-2"))
        .await
        .unwrap();

    // Never held a key: named in the one-line error.
    let out = erase(&url, "nobody-7", &["--yes"]).await;
    assert_one_line_error(&out, "data subject nobody-7 has no key");
    assert_eq!(fresh_lookup(&url, "nobody-7").await, KeyState::Unknown);
    // Malformed ids, refused before anything is asked of the server (with or without --yes).
    let long = "x".repeat(257);
    for bad in ["", "a\u{1b}]0;owned\u{7}b", "line\nbreak", long.as_str()] {
        for extra in [&["--yes"][..], &[]] {
            let out = erase(&url, bad, extra).await;
            assert_one_line_error(&out, "invalid data subject id");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
            assert!(out.stdout.is_empty(), "{out:?}");
        }
    }
    // A namespace without a key bucket: nothing to erase, and no bucket created.
    let mut args: Vec<String> = ["erase", "person-1", "--yes", "--namespace", "elsewhere"]
        .map(String::from)
        .into();
    args.extend(["--nats", url.as_str()].map(String::from));
    let out = run(args).await;
    assert_one_line_error(&out, "no key bucket AETHER_KEYS_elsewhere");
    let connection = Connection::from(async_nats::connect(&url).await.unwrap());
    assert!(NatsKeyStore::open_existing(
        &connection,
        KeyStoreConfig::default().namespace("elsewhere")
    )
    .await
    .unwrap()
    .is_none());
    // Nothing of the real subjects changed.
    for subject in ["person-1", "person-2"] {
        assert!(matches!(
            fresh_lookup(&url, subject).await,
            KeyState::Active(_)
        ));
    }
    // `events` of a namespace without a key bucket shows the data as stored.
    let out = events(&url, "member-1", &["--json"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_no_clear_value(&stdout(&out));
}

/// The key records of `subject` still in the key bucket's stream: a key, not a tombstone.
async fn key_records_left(url: &str, subject: &str) -> usize {
    use base64::Engine;
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let bucket = format!("AETHER_KEYS_{NS}");
    let stream = js.get_stream(format!("KV_{bucket}")).await.unwrap();
    let key_subject = format!(
        "$KV.{bucket}.s.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(subject)
    );
    let state = stream.cached_info().state.clone();
    let mut left = 0;
    for seq in state.first_sequence..=state.last_sequence {
        // Wiped messages are gone: an error.
        if let Ok(message) = stream.get_raw_message(seq).await {
            if message.subject.as_str() == key_subject && message.payload.starts_with(b"k1") {
                left += 1;
            }
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erase_killed_at_any_point_is_finished_by_running_it_again() {
    let Setup {
        server, private, ..
    } = setup().await;
    let url = server.url();
    let delays_ms = [0u64, 2, 5, 8, 10, 12, 15, 20, 25, 30, 40];
    for (k, _) in delays_ms.iter().enumerate() {
        private
            .save_event(&registered(
                &format!("member-{k}"),
                &format!("killed-{k}"),
                "bystander",
            ))
            .await
            .unwrap();
        assert_eq!(key_records_left(&url, &format!("killed-{k}")).await, 1);
    }
    for (k, delay) in delays_ms.iter().enumerate() {
        let subject = format!("killed-{k}");
        let mut child = StdCommand::new(BIN)
            .args([
                "erase",
                &subject,
                "--yes",
                "--namespace",
                NS,
                "--nats",
                &url,
            ])
            .env("NO_COLOR", "1")
            .env_remove("NATS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        // SIGKILL: no cleanup of any kind (it may have finished already).
        let _ = child.kill();
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();

        let out = erase(&url, &subject, &["--yes"]).await;
        assert!(out.status.success(), "after a kill at {delay} ms: {out:?}");
        let said = stdout(&out);
        assert!(
            said == format!("erased data subject {subject}\n")
                || said == format!("data subject {subject} was already erased\n"),
            "{said:?}"
        );
        assert_eq!(fresh_lookup(&url, &subject).await, KeyState::Erased);
        assert_eq!(
            key_records_left(&url, &subject).await,
            0,
            "the key of {subject} was not wiped (killed at {delay} ms)"
        );
    }
    // The bystander kept its key.
    assert!(matches!(
        fresh_lookup(&url, "bystander").await,
        KeyState::Active(_)
    ));
    assert_eq!(key_records_left(&url, "bystander").await, 1);
}
