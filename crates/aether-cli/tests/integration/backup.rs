//! `aether backup` and `aether restore` against real nats-servers: a backup taken while
//! actors are written, restored into an empty server and compared with the original; bad
//! input refused with one line and nothing written; a backup interrupted with Ctrl-C leaving
//! no directory behind, and a restore interrupted or refused midway leaving no stream.

use std::path::Path;
use std::process::{Command as StdCommand, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::{ActorKey, Error, Event, EventStore, LogPosition, StorageKind};
use aether_projection::{NatsProjectionStore, ProjectionStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::nats::{aether, assert_one_line_error, exited, stdout, BIN};

async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

async fn open_store(url: &str, namespace: &str, partitions: u32) -> JetStreamEventStore {
    let client = async_nats::connect(url).await.unwrap();
    let config = JetStreamConfig::default().namespace(namespace);
    let config = if partitions > 1 {
        config.partitions(partitions)
    } else {
        config
    };
    JetStreamEventStore::new(client, config).await.unwrap()
}

async fn history(store: &JetStreamEventStore, id: &str) -> Vec<Event> {
    store.events_of(ActorKey::untyped(id), 1).await.unwrap()
}

/// The names of the streams on a server.
async fn stream_names(url: &str) -> Vec<String> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut names: Vec<String> = js
        .stream_names()
        .map(|n| n.unwrap())
        .collect::<Vec<_>>()
        .await;
    names.sort();
    names
}

fn one_line(out: &Output, starts: &str) -> String {
    assert!(out.status.success(), "{out:?}");
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text:?}");
    assert!(lines[0].starts_with(starts), "{text:?}");
    lines[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_a_prefix_of_every_history_at_the_same_sequences() {
    let source = NatsServer::start().unwrap();
    let target = NatsServer::start().unwrap();
    let (src, dst) = (source.url(), target.url());
    const PARTS: u32 = 2;
    let store = Arc::new(open_store(&src, "bk", PARTS).await);
    // Quiet actors: written before the backup only.
    for a in 0..6 {
        let id = format!("quiet-{a}");
        store
            .save_event(&Event::new("Opened", id.as_str(), 1))
            .await
            .unwrap();
        let batch: Vec<Event> = (2..=3)
            .map(|v| Event::new("Deposited", id.as_str(), v).with_field("amount", v))
            .collect();
        store.save_events(&id, &batch).await.unwrap();
    }
    let checkpoint = LogPosition::new(3, 0);
    let client = async_nats::connect(&src).await.unwrap();
    let state = NatsProjectionStore::open(client, "AETHER_PROJECTIONS", StorageKind::File)
        .await
        .unwrap();
    state
        .save_checkpoint("ledger.l0", checkpoint)
        .await
        .unwrap();

    // Busy actors: written all through the backup.
    let stop = CancellationToken::new();
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (store, stop, written) = (store.clone(), stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            let id = format!("busy-{w}");
            let mut version = 0;
            while !stop.is_cancelled() {
                version += 1;
                store
                    .save_event(
                        &Event::new("Ticked", id.as_str(), version).with_field("n", version),
                    )
                    .await
                    .unwrap();
                written.fetch_add(1, Ordering::SeqCst);
            }
            version
        }));
    }
    // Writers under way before the backup starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while written.load(Ordering::SeqCst) < 30 {
        assert!(Instant::now() < deadline, "writers made no progress");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("b1");
    let out = out_dir.to_str().unwrap().to_string();
    let started = written.load(Ordering::SeqCst);
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for w in 0..3 {
            v.push(history(&store, &format!("busy-{w}")).await.len() as u64);
        }
        v
    };
    let backup = run(&["backup", "--namespace", "bk", "--out", &out, "--nats", &src]).await;
    let after = written.load(Ordering::SeqCst);
    let during = after - started;
    // Events written once the backup finished are certainly not in it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while written.load(Ordering::SeqCst) < after + 3 {
        assert!(Instant::now() < deadline, "writers stopped");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.cancel();
    for w in writers {
        w.await.unwrap();
    }
    let line = one_line(&backup, "backed up 2 streams (");
    assert!(line.contains("and 1 bucket (2 keys)"), "{line}");
    assert!(during > 0, "nothing was written while the backup ran");
    assert!(out_dir.join("manifest.json").is_file());
    assert!(!dir.path().join("b1.partial").exists());

    // Nothing on the target yet; restore into it.
    assert!(stream_names(&dst).await.is_empty());
    let restore = run(&["restore", "--from", &out, "--nats", &dst]).await;
    one_line(&restore, "restored 2 streams (");
    assert_eq!(
        stream_names(&dst).await,
        vec![
            "KV_AETHER_PROJECTIONS",
            "bk_AETHER_EVENTS_P0",
            "bk_AETHER_EVENTS_P1"
        ]
    );

    let restored = open_store(&dst, "bk", PARTS).await;
    for a in 0..6 {
        let id = format!("quiet-{a}");
        let original = history(&store, &id).await;
        assert_eq!(original.len(), 3);
        assert_eq!(history(&restored, &id).await, original, "{id}");
    }
    let (mut original_total, mut copy_total) = (0, 0);
    for (w, before) in before.iter().enumerate() {
        let id = format!("busy-{w}");
        let original = history(&store, &id).await;
        let copy = history(&restored, &id).await;
        original_total += original.len();
        copy_total += copy.len();
        assert!(
            copy.len() as u64 >= *before,
            "{id}: {} < {before}",
            copy.len()
        );
        assert_eq!(copy[..], original[..copy.len()], "{id} is not a prefix");
    }
    assert!(
        copy_total < original_total,
        "the backup holds events written after it"
    );

    // Every restored message is the original's at the same sequence.
    let (a, b) = (
        async_nats::jetstream::new(async_nats::connect(&src).await.unwrap()),
        async_nats::jetstream::new(async_nats::connect(&dst).await.unwrap()),
    );
    for p in 0..PARTS {
        let name = format!("bk_AETHER_EVENTS_P{p}");
        let (sa, mut sb) = (
            a.get_stream(&name).await.unwrap(),
            b.get_stream(&name).await.unwrap(),
        );
        let info = sb.info().await.unwrap().clone();
        assert!(info.state.messages > 0, "{name} is empty");
        assert_eq!(info.state.first_sequence, 1);
        assert!(info.config.deny_delete && info.config.deny_purge);
        for seq in 1..=info.state.last_sequence {
            let (x, y) = (
                sa.get_raw_message(seq).await.unwrap(),
                sb.get_raw_message(seq).await.unwrap(),
            );
            assert_eq!((x.sequence, &x.subject), (y.sequence, &y.subject), "{name}");
            assert_eq!(x.payload, y.payload, "{name} at {seq}");
            let h = |m: &async_nats::jetstream::message::StreamMessage, k: &str| {
                m.headers.get(k).map(|v| v.as_str().to_string())
            };
            assert_eq!(h(&x, "Aether-Version"), h(&y, "Aether-Version"));
            assert!(h(&y, "Nats-Expected-Last-Subject-Sequence").is_none());
        }
    }

    // The checkpoint is back, and the restored store keeps its concurrency checks.
    let client = async_nats::connect(&dst).await.unwrap();
    let state = NatsProjectionStore::open(client, "AETHER_PROJECTIONS", StorageKind::File)
        .await
        .unwrap();
    assert_eq!(
        state.checkpoint("ledger.l0").await.unwrap(),
        Some(checkpoint)
    );
    let stale = restored
        .save_event(&Event::new("Deposited", "quiet-0", 3))
        .await;
    assert!(
        matches!(stale, Err(Error::VersionConflict { .. })),
        "{stale:?}"
    );
    restored
        .save_event(&Event::new("Deposited", "quiet-0", 4))
        .await
        .unwrap();
    assert_eq!(history(&restored, "quiet-0").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_bad_input_and_existing_streams_with_one_line_and_writes_nothing() {
    let source = NatsServer::start().unwrap();
    let target = NatsServer::start().unwrap();
    let (src, dst) = (source.url(), target.url());
    let store = open_store(&src, "bad", 1).await;
    for v in 1..=3 {
        store
            .save_event(&Event::new("Ticked", "a", v))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let good_s = good.to_str().unwrap();
    let out = run(&[
        "backup",
        "--namespace",
        "bad",
        "--out",
        good_s,
        "--nats",
        &src,
    ])
    .await;
    // No projections bucket on this server: the streams alone.
    one_line(&out, "backed up 1 stream (3 messages) and 0 buckets");

    // Into a directory that is not empty: refused, left as it was.
    let out = run(&[
        "backup",
        "--namespace",
        "bad",
        "--out",
        good_s,
        "--nats",
        &src,
    ])
    .await;
    assert_one_line_error(&out, "exists and is not empty");
    assert!(!dir.path().join("good.partial").exists());
    assert!(good.join("manifest.json").is_file());
    // A bucket named that does not exist.
    let other = dir.path().join("other");
    let out = run(&[
        "backup",
        "--namespace",
        "bad",
        "--bucket",
        "NOPE",
        "--out",
        other.to_str().unwrap(),
        "--nats",
        &src,
    ])
    .await;
    assert_one_line_error(&out, "bucket NOPE does not exist");
    assert!(!other.exists() && !dir.path().join("other.partial").exists());

    let missing = dir.path().join("missing");
    let out = run(&[
        "restore",
        "--from",
        missing.to_str().unwrap(),
        "--nats",
        &dst,
    ])
    .await;
    assert_one_line_error(&out, "no backup at");

    let copy = |name: &str| {
        let to = dir.path().join(name);
        std::fs::create_dir_all(to.join("streams")).unwrap();
        std::fs::create_dir_all(to.join("buckets")).unwrap();
        for f in ["manifest.json", "streams/bad_AETHER_EVENTS.jsonl"] {
            std::fs::copy(good.join(f), to.join(f)).unwrap();
        }
        to
    };
    let restore_from = |p: &Path| {
        let p = p.to_str().unwrap().to_string();
        let dst = dst.clone();
        async move { run(&["restore", "--from", &p, "--nats", &dst]).await }
    };

    let not_json = copy("not-json");
    std::fs::write(not_json.join("manifest.json"), "{ not json").unwrap();
    assert_one_line_error(&restore_from(&not_json).await, "corrupt backup");

    let future = copy("future");
    let text = std::fs::read_to_string(future.join("manifest.json")).unwrap();
    std::fs::write(
        future.join("manifest.json"),
        text.replacen("\"format\": 1", "\"format\": 99", 1),
    )
    .unwrap();
    assert_one_line_error(&restore_from(&future).await, "unsupported backup format 99");

    // --check reads everything and connects to nothing.
    let check = run(&[
        "restore",
        "--from",
        good_s,
        "--check",
        "--nats",
        "nats://127.0.0.1:1",
    ])
    .await;
    one_line(
        &check,
        &format!("backup {good_s} is complete: 1 stream (3 messages) and 0 buckets (0 keys) of bad_AETHER_EVENTS, taken "),
    );

    let bad_line = copy("bad-line");
    let data = bad_line.join("streams/bad_AETHER_EVENTS.jsonl");
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str("{\"seq\": 4, \"oops\n");
    std::fs::write(&data, text).unwrap();
    assert_one_line_error(&restore_from(&bad_line).await, "line 4 is");

    let tampered = copy("tampered");
    let data = tampered.join("streams/bad_AETHER_EVENTS.jsonl");
    let text = std::fs::read_to_string(&data).unwrap();
    std::fs::write(&data, text.replacen("\"seq\":2", "\"seq\":5", 1)).unwrap();
    assert_one_line_error(&restore_from(&tampered).await, "sequence 5");
    let check = run(&["restore", "--from", tampered.to_str().unwrap(), "--check"]).await;
    assert_one_line_error(&check, "sequence 5");
    assert!(
        stream_names(&dst).await.is_empty(),
        "bad input wrote something"
    );

    // A target that has the stream already: refused before anything is written.
    open_store(&dst, "bad", 1).await;
    assert_one_line_error(&restore_from(&good).await, "already exists");
    assert_eq!(stream_names(&dst).await, vec!["bad_AETHER_EVENTS"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backup_leaves_no_directory() {
    let mut server = NatsServer::start().unwrap();
    let url = server.url();
    let store = open_store(&url, "int", 1).await;
    store
        .save_event(&Event::new("Ticked", "a", 1))
        .await
        .unwrap();
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b");
    let partial = dir.path().join("b.partial");
    // A stalled server holds the backup at its first request: it cannot finish before Ctrl-C.
    server.pause().unwrap();
    let child = StdCommand::new(BIN)
        .args(["backup", "--namespace", "int", "--out"])
        .arg(&out)
        .args(["--nats", &url])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !partial.exists() {
        assert!(Instant::now() < deadline, "the backup never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = exited(child).await;
    server.resume().unwrap();
    assert_one_line_error(&output, "interrupted");
    assert!(!out.exists(), "the target was written");
    assert!(!partial.exists(), "the partial backup was left");
}

/// Rewrites the only stream of the backup in `dir`: each record (a JSON object) through
/// `edit`, the manifest's sequences, size and checksum made to match.
fn rewrite_stream(dir: &Path, edit: impl Fn(usize, &mut serde_json::Value)) {
    use sha2::Digest;
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let entry = &mut manifest["streams"][0];
    let data = dir.join(entry["file"]["path"].as_str().unwrap());
    let mut text = String::new();
    let mut seqs = Vec::new();
    for (i, line) in std::fs::read_to_string(&data).unwrap().lines().enumerate() {
        let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
        edit(i, &mut record);
        seqs.push(record["seq"].as_u64().unwrap());
        text.push_str(&serde_json::to_string(&record).unwrap());
        text.push('\n');
    }
    std::fs::write(&data, &text).unwrap();
    entry["first_seq"] = seqs[0].into();
    entry["last_seq"] = seqs[seqs.len() - 1].into();
    entry["file"]["bytes"] = (text.len() as u64).into();
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    entry["file"]["sha256"] = hex.into();
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_keeps_a_first_sequence_past_one_and_removes_what_a_failed_restore_created() {
    let source = NatsServer::start().unwrap();
    let target = NatsServer::start().unwrap();
    let (src, dst) = (source.url(), target.url());
    let store = open_store(&src, "seq", 1).await;
    for v in 1..=3 {
        store
            .save_event(&Event::new("Ticked", "a", v))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let backup_dir = |name: &str| dir.path().join(name);
    for name in ["late", "broken"] {
        let out = backup_dir(name);
        let out = run(&[
            "backup",
            "--namespace",
            "seq",
            "--out",
            out.to_str().unwrap(),
            "--nats",
            &src,
        ])
        .await;
        one_line(&out, "backed up 1 stream (3 messages)");
    }

    // A stream whose oldest messages expired: it starts at sequence 5.
    rewrite_stream(&backup_dir("late"), |_, r| {
        r["seq"] = (r["seq"].as_u64().unwrap() + 4).into();
    });
    let out = run(&[
        "restore",
        "--from",
        backup_dir("late").to_str().unwrap(),
        "--nats",
        &dst,
    ])
    .await;
    let client = async_nats::connect(&dst).await.unwrap();
    let old_server = aether_nats::backend::server_older_than(&client.server_info().version, 2, 10);
    if old_server {
        assert_one_line_error(
            &out,
            "unsupported: stream seq_AETHER_EVENTS must start at sequence 5",
        );
        assert!(stream_names(&dst).await.is_empty(), "left a stream behind");
    } else {
        one_line(&out, "restored 1 stream (3 messages)");
        let js = async_nats::jetstream::new(client.clone());
        let mut stream = js.get_stream("seq_AETHER_EVENTS").await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        assert_eq!((state.first_sequence, state.last_sequence), (5, 7));
        let restored = open_store(&dst, "seq", 1).await;
        assert_eq!(history(&restored, "a").await, history(&store, "a").await);
        restored
            .save_event(&Event::new("Ticked", "a", 4))
            .await
            .unwrap();
        js.delete_stream("seq_AETHER_EVENTS").await.unwrap();
    }

    // A message the server cannot store (no stream takes its subject) fails the restore after
    // its stream was created: the stream is removed again.
    rewrite_stream(&backup_dir("broken"), |i, r| {
        if i == 1 {
            r["subject"] = "nowhere.at.all".into();
        }
    });
    let out = run(&[
        "restore",
        "--from",
        backup_dir("broken").to_str().unwrap(),
        "--nats",
        &dst,
    ])
    .await;
    assert_one_line_error(
        &out,
        "removed what the restore had created (seq_AETHER_EVENTS)",
    );
    assert!(stream_names(&dst).await.is_empty(), "left a stream behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_without_a_server_or_into_a_file_fails_with_one_line_and_leaves_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b");
    let started = Instant::now();
    let output = run(&["backup", "--out", out.to_str().unwrap(), "--nats", &url]).await;
    assert_one_line_error(&output, "cannot connect to NATS");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!out.exists() && !dir.path().join("b.partial").exists());

    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let output = run(&["backup", "--out", file.to_str().unwrap(), "--nats", &url]).await;
    assert_one_line_error(&output, "exists and is not a directory");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_the_server_refuses_midway_removes_what_it_created() {
    let source = NatsServer::start().unwrap();
    let store = open_store(&source.url(), "perm", 1).await;
    store
        .save_event(&Event::new("Ticked", "a", 1))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b");
    let out = out.to_str().unwrap();
    let backup = run(&[
        "backup",
        "--namespace",
        "perm",
        "--out",
        out,
        "--nats",
        &source.url(),
    ])
    .await;
    one_line(&backup, "backed up 1 stream");
    // This user may create streams but not publish events into them.
    let target = NatsServer::builder()
        .extra_config(
            r#"
authorization {
  users = [
    { user: admin, password: admin }
    { user: restorer, password: restorer, permissions: {
        publish: { deny: ["perm_AETHER_EVENTS.events.>"] }
    } }
  ]
}
"#,
        )
        .start()
        .unwrap();
    let url = target.url();
    let started = Instant::now();
    let output = run(&[
        "restore",
        "--from",
        out,
        "--nats",
        &url,
        "--user",
        "restorer",
        "--password",
        "restorer",
    ])
    .await;
    assert_one_line_error(&output, "permission denied");
    assert_one_line_error(
        &output,
        "removed what the restore had created (perm_AETHER_EVENTS)",
    );
    // Refused at once, not after the request timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into())
        .connect(url.trim_start_matches("nats://"))
        .await
        .unwrap();
    let names: Vec<String> = async_nats::jetstream::new(admin)
        .stream_names()
        .map(|n| n.unwrap())
        .collect()
        .await;
    assert!(names.is_empty(), "left {names:?}");
}

/// Opens the named pipe at `path` for writing without waiting: `None` while nobody has it
/// open for reading.
#[cfg(target_os = "linux")]
fn open_pipe_for_writing(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK on Linux.
    const NONBLOCK: i32 = 0o4000;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(NONBLOCK)
        .open(path)
        .ok()
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_removes_what_it_created() {
    let source = NatsServer::start().unwrap();
    let target = NatsServer::start().unwrap();
    let store = open_store(&source.url(), "stop", 1).await;
    for v in 1..=3 {
        store
            .save_event(&Event::new("Ticked", "a", v))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b");
    let backup = run(&[
        "backup",
        "--namespace",
        "stop",
        "--out",
        out.to_str().unwrap(),
        "--nats",
        &source.url(),
    ])
    .await;
    one_line(&backup, "backed up 1 stream");
    // The stream's data comes through a named pipe: the restore reads it once to check it,
    // then, having created the stream, waits to read it again until the test writes it. The
    // restore reaches the server through a proxy the test freezes, so that it waits for its
    // acknowledgements for as long as the test likes.
    let data = out.join("streams/stop_AETHER_EVENTS.jsonl");
    let content = std::fs::read(&data).unwrap();
    std::fs::remove_file(&data).unwrap();
    let made = StdCommand::new("mkfifo").arg(&data).status().unwrap();
    assert!(made.success());
    let proxy = aether_testkit::TcpProxy::start(target.port()).unwrap();
    let child = StdCommand::new(BIN)
        .args(["restore", "--from"])
        .arg(&out)
        .args(["--nats", &proxy.nats_url()])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wait_for = |what: &'static str, done: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    // The check's read (written without blocking: a restore that failed before reading makes
    // the test fail, not wait forever).
    let mut pipe = None;
    wait_for("the restore never checked its data", &mut || {
        pipe = open_pipe_for_writing(&data);
        pipe.is_some()
    });
    std::io::Write::write_all(&mut pipe.take().unwrap(), &content).unwrap();
    // The stream exists: the restore is writing, with Ctrl-C watched.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stream_names(&target.url())
        .await
        .contains(&"stop_AETHER_EVENTS".to_string())
    {
        assert!(
            Instant::now() < deadline,
            "the restore never created its stream"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // It opens its data again once the server has answered the stream's creation; only then
    // is the proxy frozen (frozen earlier, the creation's answer could be held back, and the
    // restore would never get to its data). Its messages then go out and their
    // acknowledgements are held back.
    wait_for("the restore never read its data", &mut || {
        pipe = open_pipe_for_writing(&data);
        pipe.is_some()
    });
    proxy.freeze();
    std::io::Write::write_all(&mut pipe.take().unwrap(), &content).unwrap();
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // Handling Ctrl-C, it drops its work and with it the pipe; then the server may answer.
    wait_for("the restore did not stop on Ctrl-C", &mut || {
        open_pipe_for_writing(&data).is_none()
    });
    proxy.thaw();
    let output = exited(child).await;
    assert_one_line_error(
        &output,
        "interrupted; removed what the restore had created (stop_AETHER_EVENTS)",
    );
    assert!(stream_names(&target.url()).await.is_empty());
}
