//! The `aether` binary against real nats-servers started by each test: the demo over NATS,
//! events, stats, tail, cluster members and shards, and authentication.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command as StdCommand, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_cli::demo::Bank;
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::{Event, EventBroadcaster, EventStore, SnapshotStore};
use aether_store::{InMemoryEventStore, JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use assert_cmd::Command;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_aether");

pub(crate) fn aether() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("NATS_URL")
        .env_remove("NATS_TOKEN")
        .env_remove("NATS_PASSWORD")
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(90));
    cmd
}

/// Runs the binary off the async runtime, so the test's own NATS clients keep running.
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn assert_one_line_error(out: &Output, contains: &str) {
    assert!(!out.status.success(), "expected failure: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    assert!(
        lines[0].contains(contains),
        "{err:?} should contain {contains:?}"
    );
}

pub(crate) async fn store(url: &str, namespace: &str) -> JetStreamEventStore {
    let client = async_nats::connect(url).await.unwrap();
    JetStreamEventStore::new(client, JetStreamConfig::default().namespace(namespace))
        .await
        .unwrap()
}

/// Three actors: `a` with a single event then a batch of three, `b` with two, `c` with one.
async fn write_sample(store: &JetStreamEventStore) {
    store
        .save_event(&Event::new("Opened", "a", 1).with_field("owner", "Ada"))
        .await
        .unwrap();
    let batch: Vec<Event> = (2..=4)
        .map(|v| Event::new("Deposited", "a", v).with_field("amount", v * 10))
        .collect();
    store.save_events("a", &batch).await.unwrap();
    for v in 1..=2 {
        store
            .save_event(&Event::new("Noted", "b", v))
            .await
            .unwrap();
    }
    store
        .save_event(&Event::new("Noted", "c", 1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_over_nats() {
    let server = NatsServer::start().unwrap();
    let out = run(args(&["demo", "--actors", "30", "--nats", &server.url()])).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("over NATS"), "{text}");
    crate::cli::check_events_and_transfers(&text);
    let verified = text
        .lines()
        .find(|l| l.starts_with("balances verified:"))
        .unwrap();
    let parts: Vec<&str> = verified.split_whitespace().collect();
    assert_eq!(parts[2], parts[4], "{verified}");
    // The events are in JetStream for `aether events`.
    // The actor and its type, as the demo says them (the accounts are typed actors).
    let hint: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("look at one: aether events "))
        .unwrap()
        .split_whitespace()
        .take_while(|w| *w != "--nats")
        .map(str::to_string)
        .collect();
    assert!(hint.contains(&"--type".to_string()), "{hint:?}");
    let mut command = vec!["events".to_string()];
    command.extend(hint);
    command.extend(["--nats".to_string(), server.url()]);
    let out = run(command).await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("AccountOpened"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_as_table_and_json_lines() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = store(&url, "shop").await;
    write_sample(&s).await;

    let out = run(args(&[
        "events",
        "a",
        "--namespace",
        "shop",
        "--nats",
        &url,
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("VERSION"), "{text}");
    assert!(
        lines[1].starts_with("1 ") && lines[1].contains("Opened"),
        "{text}"
    );
    assert!(lines[1].contains(r#"{"owner":"Ada"}"#), "{text}");
    assert!(
        lines[4].starts_with("4 ") && lines[4].contains(r#"{"amount":40}"#),
        "{text}"
    );

    let out = run(args(&[
        "events",
        "a",
        "--from",
        "3",
        "--json",
        "--namespace",
        "shop",
        "--nats",
        &url,
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    let events: Vec<Event> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].version, 3);
    assert_eq!(events[1].event_type, "Deposited");
    assert_eq!(events[1].actor_id, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_errors() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = store(&url, "shop").await;
    write_sample(&s).await;
    let out = run(args(&[
        "events",
        "nobody",
        "--namespace",
        "shop",
        "--nats",
        &url,
    ]))
    .await;
    assert_one_line_error(
        &out,
        "actor nobody has no events in stream shop_AETHER_EVENTS",
    );
    let out = run(args(&[
        "events",
        "a",
        "--from",
        "9",
        "--namespace",
        "shop",
        "--nats",
        &url,
    ]))
    .await;
    assert_one_line_error(&out, "latest version 4");
    let out = run(args(&[
        "events",
        "a",
        "--namespace",
        "nowhere",
        "--nats",
        &url,
    ]))
    .await;
    assert_one_line_error(&out, "stream nowhere_AETHER_EVENTS not found");
    let out = run(args(&["stats", "--stream", "OTHER", "--nats", &url])).await;
    assert_one_line_error(&out, "stream OTHER not found");
    // Read-only commands never create the stream they looked for.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    assert!(js.get_stream("nowhere_AETHER_EVENTS").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_what_was_written() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = store(&url, "shop").await;
    write_sample(&s).await;
    let out = run(args(&["stats", "--namespace", "shop", "--nats", &url])).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let value = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .trim()
            .to_string()
    };
    assert_eq!(value("stream"), "shop_AETHER_EVENTS");
    assert_eq!(value("messages"), "5");
    assert!(value("events").starts_with("7 in 5 messages"), "{text}");
    assert_eq!(value("actors"), "3");
    assert_eq!(value("replicas"), "1");
    assert_eq!(value("storage"), "file");
    assert_eq!(value("deny delete"), "true");
    assert_eq!(value("deny purge"), "true");
    // Events are kept forever unless an age limit is configured.
    assert!(value("retention").contains("forever"), "{text}");
    let bytes = s.stream_info().await.unwrap().state.bytes;
    assert!(value("bytes").starts_with(&bytes.to_string()), "{text}");
}

/// Reads a child's pipe line by line on a thread.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn interrupt(child: &Child) {
    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_live_events_until_ctrl_c() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let mut child = StdCommand::new(BIN)
        .args([
            "tail",
            "orders.*",
            "--type",
            "OrderPlaced",
            "--type",
            "OrderShipped",
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
    let out = lines_of(child.stdout.take().unwrap());
    let ready = tokio::task::spawn_blocking(move || {
        let line = err.recv_timeout(Duration::from_secs(20));
        (line, err)
    })
    .await
    .unwrap();
    let (ready, _err) = ready;
    let ready = ready.expect("tail never said it was listening");
    assert!(
        ready.starts_with("listening on aether.events.orders.*"),
        "{ready}"
    );

    let bus = NatsEventBus::connect(&url, NatsBusConfig::default())
        .await
        .unwrap();
    bus.publish(
        "orders.eu",
        &Event::new("OrderPlaced", "order-1", 1).with_field("total", 42),
    )
    .await
    .unwrap();
    bus.publish("orders.eu", &Event::new("Ignored", "order-1", 2))
        .await
        .unwrap();
    bus.publish("payments", &Event::new("OrderPlaced", "order-9", 1))
        .await
        .unwrap();
    bus.publish("orders.us", &Event::new("OrderShipped", "order-2", 2))
        .await
        .unwrap();
    bus.client().flush().await.unwrap();

    let got = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        while got.len() < 2 {
            match out.recv_timeout(Duration::from_secs(20)) {
                Ok(l) => got.push(l),
                Err(_) => break,
            }
        }
        got
    })
    .await
    .unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].contains("order-1 v1 OrderPlaced {\"total\":42}"),
        "{got:?}"
    );
    assert!(got[1].contains("order-2 v2 OrderShipped"), "{got:?}");

    interrupt(&child);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "tail should exit 0 on Ctrl-C: {status:?}");
}

/// Control sequences a stored event may carry to take over the terminal that prints it: the
/// window title (OSC 0), the clipboard (OSC 52), an erased line (CSI 2K), a bell, an 8-bit CSI
/// and a right-to-left override.
const HOSTILE: &str = "\u{1b}]0;owned\u{7}\u{1b}]52;c;aGk=\u{7}\u{1b}[2K\u{9b}2J\u{202e}";

/// Fails if `text` holds a byte or character a terminal would act on.
fn assert_inert(text: &str) {
    for bad in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
        assert!(
            !text.contains(bad),
            "{bad:?} reached the terminal: {text:?}"
        );
    }
    // What was there is shown, escaped.
    assert!(text.contains("\\x1b]0;owned\\x07"), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_control_sequences_are_shown_escaped_never_sent_to_the_terminal() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = store(&url, "evil").await;
    let actor = format!("acc{HOSTILE}");
    s.save_event(
        &Event::new(format!("Deposited{HOSTILE}"), actor.clone(), 1)
            .with_field("note", format!("hi{HOSTILE}\u{7f}")),
    )
    .await
    .unwrap();

    let out = run(args(&[
        "events",
        &actor,
        "--namespace",
        "evil",
        "--nats",
        &url,
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert_inert(&text);
    assert!(text.contains("Deposited\\x1b]0;owned"), "{text}");
    assert!(
        text.contains("\\u{202e}") && text.contains("\\x7f"),
        "{text}"
    );

    // An actor with no events later than asked: the error line quotes the id, escaped.
    let out = run(args(&[
        "events",
        &actor,
        "--from",
        "5",
        "--namespace",
        "evil",
        "--nats",
        &url,
    ]))
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_inert(&err);

    // The same event live on the bus, through `aether tail`.
    let mut child = StdCommand::new(BIN)
        .args(["tail", ">", "--nats", &url])
        .env("NO_COLOR", "1")
        .env_remove("NATS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    let out = lines_of(child.stdout.take().unwrap());
    // The receiver stays alive: with it gone, a warning written to the closed pipe would
    // end the command.
    let (ready, err) = tokio::task::spawn_blocking(move || {
        let line = err.recv_timeout(Duration::from_secs(20));
        (line, err)
    })
    .await
    .unwrap();
    let ready = ready.expect("tail never said it was listening");
    assert!(ready.starts_with("listening on"), "{ready}");
    let bus = NatsEventBus::connect(&url, NatsBusConfig::default())
        .await
        .unwrap();
    bus.publish(
        "evil",
        &Event::new(format!("Deposited{HOSTILE}"), actor.clone(), 1)
            .with_field("note", format!("hi{HOSTILE}")),
    )
    .await
    .unwrap();
    bus.client().flush().await.unwrap();
    let line = tokio::task::spawn_blocking(move || out.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .unwrap_or_else(|_| {
            let said: Vec<String> = err.try_iter().collect();
            panic!("tail printed nothing; on stderr: {said:?}")
        });
    assert_inert(&line);
    assert!(line.contains("acc\\x1b]0;owned"), "{line}");
    interrupt(&child);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

async fn start_node(url: &str, cluster: &str, id: &str) -> ClusterNode {
    let client = async_nats::connect(url).await.unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(InMemoryEventStore::new());
    let config = ClusterConfig::default()
        .cluster_name(cluster)
        .node_id(id)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .shards(aether_placement::ShardConfig::default().shard_count(16))
        .storage(aether_core::StorageKind::Memory);
    ClusterNode::start(client, config, Actors::new(store).with(Bank))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_members_and_shards() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let a = start_node(&url, "shop", "node-a").await;
    let b = start_node(&url, "shop", "node-b").await;
    let table = a
        .wait_for_members(&["node-a", "node-b"], Duration::from_secs(20))
        .await
        .unwrap();
    b.wait_for_members(&["node-a", "node-b"], Duration::from_secs(20))
        .await
        .unwrap();

    let out = run(args(&[
        "cluster",
        "members",
        "--cluster",
        "shop",
        "--nats",
        &url,
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("2 alive"), "{text}");
    for node in ["node-a", "node-b"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(node))
            .unwrap_or_else(|| panic!("{node} missing: {text}"));
        assert!(line.contains("alive"), "{line}");
        let owned = table.primaries_of(node).len().to_string();
        assert!(
            line.split_whitespace().any(|w| w == owned),
            "{line} vs {owned}"
        );
    }
    assert!(
        text.contains(&format!("leader {}", table.table.leader)),
        "{text}"
    );

    let out = run(args(&[
        "cluster",
        "shards",
        "--cluster",
        "shop",
        "--all",
        "--nats",
        &url,
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("16 shards"), "{text}");
    assert!(text.contains("members node-a, node-b"), "{text}");
    for shard in 0..16u32 {
        let primary = table.primary(shard).unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{shard} ")) && l.contains(primary)),
            "shard {shard} -> {primary}: {text}"
        );
    }

    // The command never joined: the table still has exactly the two nodes.
    assert_eq!(a.assignment().table.members, ["node-a", "node-b"]);

    let out = run(args(&[
        "cluster",
        "members",
        "--cluster",
        "nope",
        "--nats",
        &url,
    ]))
    .await;
    assert_one_line_error(&out, "cluster nope not found");
    let out = run(args(&[
        "cluster",
        "shards",
        "--cluster",
        "bad name",
        "--nats",
        &url,
    ]))
    .await;
    assert_one_line_error(&out, "must be 1 to 64 letters");

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let server = NatsServer::builder()
        .user_password("ada", "s3cret")
        .start()
        .unwrap();
    let url = server.url();
    let client = async_nats::ConnectOptions::with_user_and_password("ada".into(), "s3cret".into())
        .connect(&url)
        .await
        .unwrap();
    let s = JetStreamEventStore::new(client, JetStreamConfig::default().namespace("auth"))
        .await
        .unwrap();
    write_sample(&s).await;

    let out = run(args(&[
        "stats",
        "--namespace",
        "auth",
        "--user",
        "ada",
        "--password",
        "s3cret",
        "--nats",
        &url,
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("auth_AETHER_EVENTS"));
    let out = run(args(&[
        "stats",
        "--namespace",
        "auth",
        "--user",
        "ada",
        "--password",
        "wrong",
        "--nats",
        &url,
    ]))
    .await;
    assert_one_line_error(&out, "authorization failed with the user and password");
    let out = run(args(&["stats", "--namespace", "auth", "--nats", &url])).await;
    assert_one_line_error(&out, "authorization failed with no credentials");

    // The same credentials written into the URL, given with --nats or NATS_URL, are used; a
    // wrong password in it is refused and never printed.
    let in_url = url.replace("nats://", "nats://ada:s3cret@");
    let out = run(args(&["stats", "--namespace", "auth", "--nats", &in_url])).await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("auth_AETHER_EVENTS"));
    let from_env = tokio::task::spawn_blocking({
        let in_url = in_url.clone();
        move || {
            aether()
                .args(["events", "b", "--namespace", "auth"])
                .env("NATS_URL", in_url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(from_env.status.success(), "{from_env:?}");
    assert!(stdout(&from_env).contains("Noted"));
    let wrong = url.replace("nats://", "nats://ada:wr0ng@");
    let out = run(args(&["stats", "--namespace", "auth", "--nats", &wrong])).await;
    assert_one_line_error(
        &out,
        "authorization failed with the user and password in the URL",
    );
    let text = format!("{out:?}");
    assert!(!text.contains("wr0ng"), "{text}");
    assert!(text.contains("nats://ada:***@127.0.0.1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_text_server_says_the_server_does_not_speak_tls() {
    let server = NatsServer::start().unwrap();
    let tls = format!("tls://127.0.0.1:{}", server.port());
    let out = run(args(&["stats", "--nats", &tls])).await;
    assert_one_line_error(&out, "the server does not speak TLS");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("is the server running"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_permissions_are_one_clear_line() {
    let secret =
        JetStreamEventStore::stream_name_for(&JetStreamConfig::default().namespace("secret"));
    let server = NatsServer::builder()
        .extra_config(format!(
            r#"
authorization {{
  users = [
    {{ user: admin, password: admin }}
    {{ user: tenant, password: tenant, permissions: {{
        publish: {{ deny: ["{secret}.>", "$JS.API.*.*.{secret}", "$JS.API.*.*.{secret}.>", "$JS.API.DIRECT.GET.{secret}.>", "aether.events.secret"] }}
        subscribe: {{ deny: ["{secret}.>", "aether.events.secret"] }}
    }} }}
  ]
}}
"#
        ))
        .start()
        .unwrap();
    let url = server.url();
    let admin = aether_nats::Connection::connect(
        &url,
        async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into()),
    )
    .await
    .unwrap();
    let admin = JetStreamEventStore::open(&admin, JetStreamConfig::default().namespace("secret"))
        .await
        .unwrap();
    write_sample(&admin).await;
    let as_tenant = |rest: &[&str]| {
        let mut all = args(rest);
        all.extend(args(&[
            "--user",
            "tenant",
            "--password",
            "tenant",
            "--nats",
            &url,
        ]));
        all
    };
    // The CLI's request timeout (`connect::options`): a refused request is never answered, so
    // a command that missed the refusal would fail only after it.
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    let answered = args(&[
        "stats",
        "--namespace",
        "secret",
        "--user",
        "admin",
        "--password",
        "admin",
        "--nats",
        &url,
    ]);
    for command in [
        as_tenant(&["events", "a", "--namespace", "secret"]),
        as_tenant(&["stats", "--namespace", "secret"]),
        as_tenant(&["tail", "secret", "--give-up-after", "2"]),
    ] {
        // What starting the binary, connecting and being answered takes on this machine now:
        // the refused command is timed against it, so the process start is not counted.
        let started = std::time::Instant::now();
        let out = run(answered.clone()).await;
        let baseline = started.elapsed();
        assert!(out.status.success(), "{out:?}");
        let started = std::time::Instant::now();
        let out = run(command.clone()).await;
        let took = started.elapsed();
        eprintln!(
            "{command:?} in {took:?} (answered in {baseline:?}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        assert_one_line_error(&out, "permission denied");
        // Said when the server refuses, not after the request timeout: waiting for it would
        // add the whole timeout to the baseline, and half of it is left for a loaded machine.
        assert!(
            took < baseline + REQUEST_TIMEOUT / 2,
            "{command:?} took {took:?}, an answered command {baseline:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let server = NatsServer::builder().token("t0ken").start().unwrap();
    let url = server.url();
    let client = async_nats::ConnectOptions::with_token("t0ken".into())
        .connect(&url)
        .await
        .unwrap();
    let s = JetStreamEventStore::new(client, JetStreamConfig::default().namespace("auth"))
        .await
        .unwrap();
    write_sample(&s).await;
    let out = run(args(&[
        "events",
        "b",
        "--namespace",
        "auth",
        "--token",
        "t0ken",
        "--nats",
        &url,
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("Noted"));
    let out = run(args(&[
        "events",
        "b",
        "--namespace",
        "auth",
        "--token",
        "nope",
        "--nats",
        &url,
    ]))
    .await;
    assert_one_line_error(&out, "authorization failed with the token");
}

/// Makes a CA and a server certificate for 127.0.0.1 signed by it, with the `openssl` tool.
fn make_certs(dir: &std::path::Path) {
    let sh = |args: &[&str]| {
        let out = StdCommand::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl tool is needed for the TLS test");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=aether-test-ca",
    ]);
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let server = NatsServer::builder()
        .extra_config(format!(
            "tls {{ cert_file: {:?}, key_file: {:?} }}",
            dir.path().join("server.pem"),
            dir.path().join("server.key")
        ))
        .start()
        .unwrap();
    let url = server.url();
    let ca = dir.path().join("ca.pem").to_string_lossy().into_owned();
    // Connected over TLS: the answer is about the (missing) stream, not the connection.
    let out = run(args(&["stats", "--tls-ca", &ca, "--nats", &url])).await;
    assert_one_line_error(&out, "stream AETHER_EVENTS not found");
    let out = run(args(&["stats", "--nats", &url])).await;
    assert_one_line_error(&out, "TLS with NATS");
    let out = run(args(&[
        "stats",
        "--tls-ca",
        "/nonexistent/ca.pem",
        "--nats",
        &url,
    ]))
    .await;
    assert_one_line_error(&out, "CA certificate /nonexistent/ca.pem does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_gives_up_when_the_server_is_gone() {
    let mut server = NatsServer::start().unwrap();
    let url = server.url();
    let mut child = StdCommand::new(BIN)
        .args(["tail", ">", "--give-up-after", "2", "--nats", &url])
        .env("NO_COLOR", "1")
        .env_remove("NATS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    let (ready, err) = tokio::task::spawn_blocking(move || {
        let line = err.recv_timeout(Duration::from_secs(20));
        (line, err)
    })
    .await
    .unwrap();
    assert!(ready.unwrap().starts_with("listening on"));
    server.kill().unwrap();
    let (status, rest) = tokio::task::spawn_blocking(move || {
        let mut rest = Vec::new();
        while let Ok(l) = err.recv_timeout(Duration::from_secs(30)) {
            rest.push(l);
        }
        (child.wait().unwrap(), rest)
    })
    .await
    .unwrap();
    assert!(!status.success());
    let last = rest.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("error: lost the connection to NATS"),
        "{rest:?}"
    );
}

/// A handler that refuses event type `Bad` until fixed, so that one event is parked.
#[derive(Default)]
struct Picky {
    fixed: std::sync::atomic::AtomicBool,
    bad_applied: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl aether_projection::Handler<Sample> for Picky {
    async fn handle(
        &self,
        e: &aether_projection::Projected<Sample>,
    ) -> Result<(), aether_core::BoxError> {
        use std::sync::atomic::Ordering::SeqCst;
        match e.event {
            Sample::Bad {} if !self.fixed.load(SeqCst) => Err("refused".into()),
            Sample::Bad {} => {
                self.bad_applied.fetch_add(1, SeqCst);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Sample {
    Good {},
    Bad {},
}

impl aether_actor::DomainEvent for Sample {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Good {} => "Good",
            Self::Bad {} => "Bad",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_are_listed_with_position_lag_and_parked_events_reset_and_replayed() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = Arc::new(store(&url, "proj").await);
    for (v, t) in [(1, "Good"), (2, "Bad"), (3, "Good")] {
        s.save_event(&Event::new(t, "acc-1", v)).await.unwrap();
    }
    let client = async_nats::connect(&url).await.unwrap();
    let state = Arc::new(
        aether_projection::NatsProjectionStore::open(
            client,
            aether_projection::DEFAULT_PROJECTION_BUCKET,
            aether_core::StorageKind::Memory,
        )
        .await
        .unwrap(),
    );
    let picky = Arc::new(Picky::default());
    let projection = aether_projection::Projection::new(
        "picky",
        s.clone(),
        state.clone(),
        picky.clone(),
        aether_actor::EventCodec::<Sample>::default(),
        aether_projection::ProjectionConfig {
            retry: aether_actor::RetryPolicy::none(),
            ..Default::default()
        },
    )
    .unwrap();
    let report = projection.catch_up().await.unwrap();
    assert_eq!((report.handled, report.parked), (2, 1));
    // Two more events: the projection is two behind.
    s.save_event(&Event::new("Good", "acc-2", 1)).await.unwrap();
    s.save_event(&Event::new("Good", "acc-2", 2)).await.unwrap();

    let ns = ["--namespace", "proj", "--nats", &url];
    let list = run(args(&[&["projections", "list"][..], &ns[..]].concat())).await;
    assert!(list.status.success(), "{list:?}");
    let text = stdout(&list);
    let line = text
        .lines()
        .find(|l| l.starts_with("picky"))
        .expect("listed");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells, ["picky", "3.0", "2", "1", "checkpoint"], "{text}");

    let parked = run(args(
        &[&["projections", "parked", "picky"][..], &ns[..]].concat(),
    ))
    .await;
    let text = stdout(&parked);
    assert!(text.contains("Bad") && text.contains("refused"), "{text}");

    let reset = run(args(
        &[&["projections", "reset", "picky"][..], &ns[..]].concat(),
    ))
    .await;
    assert!(reset.status.success(), "{reset:?}");
    let status = run(args(
        &[&["projections", "status", "picky"][..], &ns[..]].concat(),
    ))
    .await;
    let text = stdout(&status);
    let line = text
        .lines()
        .find(|l| l.starts_with("picky"))
        .expect("status");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells, ["picky", "-", "5", "1", "checkpoint"], "{text}");

    let unknown = run(args(
        &[&["projections", "status", "nobody"][..], &ns[..]].concat(),
    ))
    .await;
    assert_one_line_error(&unknown, "no projection named");

    // After a fix, the operator asks the running projection to replay its parked event.
    picky.fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let projection = Arc::new(projection);
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let (projection, stop) = (projection.clone(), stop.clone());
        async move { projection.run(stop).await }
    });
    let replay = run(args(
        &[&["projections", "replay-parked", "picky"][..], &ns[..]].concat(),
    ))
    .await;
    assert!(replay.status.success(), "{replay:?}");
    assert!(stdout(&replay).contains("replay of 1 parked event"));
    use aether_projection::ProjectionStore;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !state.parked("picky").await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "not replayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await.unwrap().unwrap();
    // Once by the replay, and once more by the rebuild after the reset (which parked nothing:
    // the handler was fixed by then).
    assert!(picky.bad_applied.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

/// A sink that keeps its position with its updates (exactly once), refusing `Bad` events.
#[derive(Default)]
struct KeepsPosition {
    position: std::sync::Mutex<Option<aether_core::LogPosition>>,
}

#[async_trait::async_trait]
impl aether_projection::Handler<Sample> for KeepsPosition {
    async fn handle(
        &self,
        e: &aether_projection::Projected<Sample>,
    ) -> Result<(), aether_core::BoxError> {
        if matches!(e.event, Sample::Bad {}) {
            return Err(aether_projection::Park::new("refused").into());
        }
        *self.position.lock().unwrap() = Some(e.position);
        Ok(())
    }

    async fn position(
        &self,
        _projection: &str,
    ) -> Result<aether_projection::SinkPosition, aether_core::BoxError> {
        Ok(aether_projection::SinkPosition::Kept(
            *self.position.lock().unwrap(),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_whose_sink_keeps_its_position_is_listed_with_its_position_and_lag() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = Arc::new(store(&url, "kept").await);
    for (v, t) in [(1, "Good"), (2, "Bad"), (3, "Good"), (4, "Good")] {
        s.save_event(&Event::new(t, "acc-1", v)).await.unwrap();
    }
    let client = async_nats::connect(&url).await.unwrap();
    let state = Arc::new(
        aether_projection::NatsProjectionStore::open(
            client,
            aether_projection::DEFAULT_PROJECTION_BUCKET,
            aether_core::StorageKind::Memory,
        )
        .await
        .unwrap(),
    );
    let sink = Arc::new(KeepsPosition::default());
    let projection = Arc::new(
        aether_projection::Projection::new(
            "ledger",
            s.clone(),
            state.clone(),
            sink.clone(),
            aether_actor::EventCodec::<Sample>::default(),
            aether_projection::ProjectionConfig {
                poll_interval: Duration::from_millis(20),
                status_interval: Duration::from_millis(100),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let (projection, stop) = (projection.clone(), stop.clone());
        async move { projection.run(stop).await }
    });
    let ns = ["--namespace", "kept", "--nats", &url];
    let list = || async { run(args(&[&["projections", "list"][..], &ns[..]].concat())).await };
    // Lists it as soon as it has reported where it stands: at the head, one event parked.
    let cells_of = |out: &Output| -> Option<Vec<String>> {
        let text = stdout(out);
        let line = text.lines().find(|l| l.starts_with("ledger"))?;
        Some(line.split_whitespace().map(str::to_string).collect())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let out = loop {
        let out = list().await;
        assert!(out.status.success(), "{out:?}");
        if cells_of(&out).is_some_and(|c| c[1] == "4.0") {
            break out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never listed at 4.0: {}",
            stdout(&out)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cells = cells_of(&out).unwrap();
    assert_eq!(
        &cells[..5],
        ["ledger", "4.0", "0", "1", "sink"],
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("kept by the projection's sink"),
        "{}",
        stdout(&out)
    );

    // Stopped, two events behind: the lag counts from its last report to the head now.
    stop.cancel();
    running.await.unwrap().unwrap();
    s.save_event(&Event::new("Good", "acc-2", 1)).await.unwrap();
    s.save_event(&Event::new("Good", "acc-2", 2)).await.unwrap();
    let out = run(args(
        &[&["projections", "status", "ledger"][..], &ns[..]].concat(),
    ))
    .await;
    assert!(out.status.success(), "{out:?}");
    let cells = cells_of(&out).expect("status");
    assert_eq!(
        &cells[..5],
        ["ledger", "4.0", "2", "1", "sink"],
        "{}",
        stdout(&out)
    );
    // Its position is the sink's to reset, not the bucket's.
    let reset = run(args(
        &[&["projections", "reset", "ledger"][..], &ns[..]].concat(),
    ))
    .await;
    assert_one_line_error(&reset, "kept by its sink");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_with_ui_keeps_its_cluster_running_behind_the_dashboard_until_ctrl_c() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let mut child = StdCommand::new(BIN)
        .args([
            "demo",
            "--actors",
            "20",
            "--nats",
            &url,
            "--ui",
            "127.0.0.1:0",
        ])
        .env("NO_COLOR", "1")
        .env_remove("NATS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = lines_of(child.stdout.take().unwrap());
    let (line, out) = tokio::task::spawn_blocking(move || {
        let found = loop {
            match out.recv_timeout(Duration::from_secs(120)) {
                Ok(l) if l.starts_with("dashboard on http://") => break Some(l),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        (found, out)
    })
    .await
    .unwrap();
    let line = line.expect("the demo says where its dashboard is");
    let address = line
        .trim_start_matches("dashboard on http://")
        .split('/')
        .next()
        .unwrap()
        .parse::<std::net::SocketAddr>()
        .unwrap();
    // The two nodes that survived the demo's failover are alive on the cluster page.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, body) = crate::ui::get(address, "/api/cluster", &[]).await;
        if body.matches("\"alive\":true").count() == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "two live members expected: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    interrupt(&child);
    let status = tokio::task::spawn_blocking(move || {
        drop(out);
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Waits for `child` to exit, for at most 30 s (then kills it and fails the test): a command
/// that ignored Ctrl-C or hung must fail the test, never hold the suite up.
pub(crate) async fn exited(mut child: std::process::Child) -> Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait().unwrap() {
            Some(_) => break,
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the command did not exit within 30 s");
            }
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    child.wait_with_output().unwrap()
}
