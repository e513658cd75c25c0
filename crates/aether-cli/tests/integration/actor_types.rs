//! Actor types in the `aether` command and the dashboard: `events --type`, `stats --type`, the
//! dashboard's actor page with a type, and live tails that follow the store's stream
//! (`tail --source store`, the dashboard's `source=store`), against real nats-servers.

use std::process::{Command as StdCommand, Output, Stdio};
use std::time::Duration;

use aether_cli::events::StreamArgs;
use aether_cli::ui::DashboardConfig;
use aether_core::{Event, EventStore};
use aether_nats::subject::encode_actor_id;
use aether_store::JetStreamEventStore;
use aether_testkit::NatsServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::nats::{aether, assert_one_line_error, stdout, store, BIN};

/// How long a test waits for what it expects before failing.
const DEADLINE: Duration = Duration::from_secs(20);

async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || aether().args(&args).output().unwrap())
        .await
        .unwrap()
}

/// `s-1` three times: a `show` with two events, a `customer` with one, an untyped one with one.
async fn write_three_actors_sharing_an_id(s: &JetStreamEventStore) {
    for v in 1..=2 {
        s.save_event(
            &Event::new("SeatBooked", "s-1", v)
                .with_actor_type("show")
                .with_field("seat", v),
        )
        .await
        .unwrap();
    }
    s.save_event(&Event::new("CustomerRegistered", "s-1", 1).with_actor_type("customer"))
        .await
        .unwrap();
    s.save_event(&Event::new("Noted", "s-1", 1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_stats_with_a_type_show_only_that_types_actor() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = store(&url, "types").await;
    write_three_actors_sharing_an_id(&s).await;

    let out = run(&[
        "events",
        "--type",
        "show",
        "s-1",
        "--namespace",
        "types",
        "--nats",
        &url,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("ACTOR TYPE"), "{text}");
    for l in &lines[1..] {
        assert!(l.contains(" show ") && l.contains("SeatBooked"), "{text}");
    }
    assert!(
        !text.contains("CustomerRegistered") && !text.contains("Noted"),
        "{text}"
    );

    // JSON lines carry the type; `--actor-type` is the same option.
    let out = run(&[
        "events",
        "s-1",
        "--actor-type",
        "customer",
        "--json",
        "--namespace",
        "types",
        "--nats",
        &url,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let events: Vec<Event> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "CustomerRegistered");
    assert_eq!(events[0].actor_type.as_deref(), Some("customer"));

    // Without a type: the untyped actor, as before.
    let out = run(&["events", "s-1", "--namespace", "types", "--nats", &url]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains("Noted") && !text.contains("SeatBooked"),
        "{text}"
    );

    // A type with no such actor, and a type that is no type name.
    let out = run(&[
        "events",
        "--type",
        "venue",
        "s-1",
        "--namespace",
        "types",
        "--nats",
        &url,
    ])
    .await;
    assert_one_line_error(
        &out,
        "actor venue/s-1 has no events in stream types_AETHER_EVENTS",
    );
    let out = run(&[
        "events",
        "--type",
        "sh.ow",
        "s-1",
        "--namespace",
        "types",
        "--nats",
        &url,
    ])
    .await;
    assert_one_line_error(&out, "actor type \"sh.ow\" must be 1 to 64 ASCII letters");
    let out = run(&["events", "--type", "a\u{1b}[2J", "s-1", "--nats", &url]).await;
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains('\u{1b}'),
        "{out:?}"
    );
    assert_one_line_error(&out, "actor type");

    // Stats count actors per type, and narrow to one type.
    let out = run(&["stats", "--namespace", "types", "--nats", &url]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let value = |text: &str, key: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .trim()
            .to_string()
    };
    assert_eq!(value(&text, "actors"), "3", "{text}");
    assert!(
        value(&text, "events").starts_with("4 in 4 messages"),
        "{text}"
    );
    let types = value(&text, "actor types");
    assert!(
        types.contains("show 1") && types.contains("customer 1") && types.contains("(untyped) 1"),
        "{text}"
    );
    let out = run(&[
        "stats",
        "--type",
        "show",
        "--namespace",
        "types",
        "--nats",
        &url,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert_eq!(value(&text, "actors"), "1", "{text}");
    assert!(
        value(&text, "events").starts_with("2 in 2 messages"),
        "{text}"
    );
    assert!(value(&text, "stream").contains("actor type show"), "{text}");
    let out = run(&[
        "stats",
        "--type",
        "a*",
        "--namespace",
        "types",
        "--nats",
        &url,
    ])
    .await;
    assert_one_line_error(&out, "actor type");
}

#[tokio::test]
async fn tail_options_that_do_not_fit_the_source_are_refused_before_connecting() {
    // Nothing listens on port 1: these fail before any connection is tried.
    let nowhere = "nats://127.0.0.1:1";
    let out = run(&["tail", "--nats", nowhere]).await;
    assert_one_line_error(&out, "a namespace pattern is required with --source bus");
    let out = run(&["tail", "orders", "--source", "store", "--nats", nowhere]).await;
    assert_one_line_error(&out, "is for --source bus");
    let out = run(&["tail", "orders", "--namespace", "shop", "--nats", nowhere]).await;
    assert_one_line_error(&out, "only --source store");
    let out = run(&[
        "tail",
        "--source",
        "store",
        "--actor-type",
        "a.b",
        "--nats",
        nowhere,
    ])
    .await;
    assert_one_line_error(&out, "actor type \"a.b\"");
    let out = run(&["tail", "--source", "disk", "--nats", nowhere]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bus"),
        "the choices are named: {out:?}"
    );
}

/// Reads a child's pipe line by line on a thread.
pub(crate) fn lines_of(
    pipe: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (off the runtime) for a line of `rx` that `wanted` accepts, keeping every line read.
pub(crate) async fn wait_line(
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    wanted: impl Fn(&str) -> bool + Send + 'static,
) -> (std::sync::mpsc::Receiver<String>, Vec<String>, bool) {
    tokio::task::spawn_blocking(move || {
        let mut seen = seen;
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = wanted(&line);
                    seen.push(line);
                    if hit {
                        return (rx, seen, true);
                    }
                }
                Err(_) => return (rx, seen, false),
            }
        }
    })
    .await
    .unwrap()
}

/// The events subject of the typed actor `id` of `actor_type` in `stream` (the store's layout).
fn typed_subject(stream: &str, actor_type: &str, id: &str) -> String {
    format!(
        "{stream}.events.{actor_type}.{}.{}",
        aether_placement::bucket_for(id),
        encode_actor_id(id)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_from_the_store_follows_one_actor_type_and_skips_hostile_messages() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = store(&url, "live").await;
    // The stream exists before the tail looks for it.
    write_three_actors_sharing_an_id(&s).await;
    let stream = s.stream_name().to_string();

    let mut child = StdCommand::new(BIN)
        .args([
            "tail",
            "--source",
            "store",
            "--actor-type",
            "show",
            "--namespace",
            "live",
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
    let (err, said, ready) = wait_line(err, Vec::new(), |l| l.starts_with("listening on")).await;
    assert!(ready, "tail never said it was listening: {said:?}");
    let listening = said.last().unwrap();
    assert!(
        listening.starts_with(&format!("listening on {stream}.events.show.*.*")),
        "{listening}"
    );
    assert!(listening.contains("the store's stream"), "{listening}");

    // Hostile messages on the followed subjects: not JSON with control sequences, an event of
    // another type, an array of nothing.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let hostile: [(String, &[u8]); 3] = [
        (typed_subject(&stream, "show", "s-9"), b"\x1b]0;owned\x07{not json"),
        (
            typed_subject(&stream, "show", "s-9"),
            br#"{"id":"x","eventType":"T","actorType":"customer","actorId":"s-9","version":1,"timestamp":"2024-01-01T00:00:00Z"}"#,
        ),
        (typed_subject(&stream, "show", "s-9"), b"[]"),
    ];
    for (subject, payload) in hostile {
        js.publish(subject, bytes::Bytes::from_static(payload))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Another type's event first, then the show's: once the show's shows, the other would
    // have come before it.
    s.save_event(&Event::new("CustomerMoved", "s-2", 1).with_actor_type("customer"))
        .await
        .unwrap();
    s.save_event(&Event::new("Untyped", "s-2", 1))
        .await
        .unwrap();
    s.save_events(
        "s-2",
        &[
            Event::new("ShowOpened", "s-2", 1).with_actor_type("show"),
            Event::new("SeatBooked", "s-2", 2)
                .with_actor_type("show")
                .with_field("seat", 7),
        ],
    )
    .await
    .unwrap();

    let (_out, lines, found) = wait_line(out, Vec::new(), |l| l.contains("SeatBooked")).await;
    assert!(found, "the show's events never showed: {lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("show/s-2 v1 ShowOpened"), "{lines:?}");
    assert!(
        lines[1].contains("show/s-2 v2 SeatBooked {\"seat\":7}"),
        "{lines:?}"
    );
    for l in &lines {
        assert!(
            !l.contains("Customer") && !l.contains("Untyped"),
            "{lines:?}"
        );
        assert!(!l.contains('\u{1b}'), "{lines:?}");
    }
    // The hostile messages were counted and skipped, and the tail is still running.
    let (_err, said, warned) = wait_line(err, Vec::new(), |l| l.contains("were skipped")).await;
    assert!(warned, "no warning about the skipped messages: {said:?}");
    for l in &said {
        assert!(!l.contains('\u{1b}'), "{said:?}");
    }
    assert!(child.try_wait().unwrap().is_none(), "the tail ended");

    let status = StdCommand::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "tail should exit 0 on Ctrl-C: {status:?}");
}

fn dashboard_config(namespace: &str) -> DashboardConfig {
    DashboardConfig {
        stream: StreamArgs {
            namespace: Some(namespace.into()),
            ..StreamArgs::default()
        },
        ..DashboardConfig::default()
    }
}

/// Reads a server-sent-event stream until `until` appears in it, or the deadline.
pub(crate) async fn read_until(
    s: &mut tokio::net::TcpStream,
    seen: &mut String,
    until: &str,
) -> bool {
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 4096];
    while !seen.contains(until) {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_a_typed_actor_and_tails_the_store() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let s = store(&url, "dash").await;
    write_three_actors_sharing_an_id(&s).await;
    let stop = CancellationToken::new();
    let addr = crate::ui::dashboard(&url, dashboard_config("dash"), &stop).await;

    let json = |body: &str| -> serde_json::Value { serde_json::from_str(body).unwrap() };
    let (status, _, body) = crate::ui::get(addr, "/api/actors/s-1?type=show", &[]).await;
    assert_eq!(status, 200, "{body}");
    let a = json(&body);
    assert_eq!(a["actorType"], "show", "{body}");
    assert_eq!(a["latestVersion"], 2, "{body}");
    let types: Vec<&str> = a["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SeatBooked", "SeatBooked"], "{body}");
    let (status, _, body) = crate::ui::get(addr, "/api/actors/s-1?type=customer", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["events"][0]["eventType"], "CustomerRegistered");
    // Without a type (or an empty one): the untyped actor.
    for path in ["/api/actors/s-1", "/api/actors/s-1?type="] {
        let (status, _, body) = crate::ui::get(addr, path, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["actorType"], serde_json::Value::Null, "{body}");
        assert_eq!(json(&body)["events"][0]["eventType"], "Noted", "{body}");
    }
    let (status, _, body) = crate::ui::get(addr, "/api/actors/s-1?type=venue", &[]).await;
    assert_eq!(status, 404, "{body}");
    // Hostile types: a 400 in JSON, never echoed raw.
    for hostile in [
        "a.b",
        "%3Cscript%3E",
        "a%0Ab",
        "%1B%5D0%3Bx%07",
        &"x".repeat(65),
    ] {
        let (status, _, body) =
            crate::ui::get(addr, &format!("/api/actors/s-1?type={hostile}"), &[]).await;
        assert_eq!(status, 400, "{hostile}: {body}");
        assert!(body.starts_with("{\"error\":"), "{hostile}: {body}");
        // JSON, shown by the page as text; control characters escaped.
        assert!(
            serde_json::from_str::<serde_json::Value>(&body).is_ok(),
            "{body}"
        );
        assert!(!body.contains('\u{1b}') && !body.contains('\n'), "{body}");
    }
    // The page builds actor links with the type, percent-encoded.
    let (_, _, js) = crate::ui::get(addr, "/app.js", &[]).await;
    assert!(
        js.contains("function actorHref"),
        "the page links actors with their type"
    );

    // A live tail of the store, one actor type.
    let (status, _, body) = crate::ui::get(addr, "/api/tail?source=disk", &[]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = crate::ui::get(addr, "/api/tail?source=store&actorType=a.b", &[]).await;
    assert_eq!(status, 400, "{body}");
    let mut tail = tokio::net::TcpStream::connect(addr).await.unwrap();
    tail.write_all(
        format!("GET /api/tail?source=store&actorType=show HTTP/1.0\r\nHost: {addr}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = String::new();
    assert!(
        read_until(&mut tail, &mut seen, "event: ready").await,
        "{seen}"
    );
    assert!(seen.starts_with("HTTP/1.0 200"), "{seen}");
    assert!(
        seen.contains("\"source\":\"store\""),
        "the page is told the source: {seen}"
    );
    assert!(
        seen.contains("dash_AETHER_EVENTS.events.show.*.*"),
        "{seen}"
    );
    // Another of every actor type, filtered by event type (the server's filter covers every
    // events subject: `<stream>.events.>`, which servers before 2.10 accept too).
    let mut all = tokio::net::TcpStream::connect(addr).await.unwrap();
    all.write_all(
        format!("GET /api/tail?source=store&type=SeatFreed,CustomerMoved HTTP/1.0\r\nHost: {addr}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut all_seen = String::new();
    assert!(
        read_until(&mut all, &mut all_seen, "event: ready").await,
        "{all_seen}"
    );
    assert!(
        all_seen.contains("dash_AETHER_EVENTS.events.>"),
        "{all_seen}"
    );
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    js.publish(
        typed_subject(s.stream_name(), "show", "s-1"),
        bytes::Bytes::from_static(b"\x00garbage"),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    s.save_event(&Event::new("CustomerMoved", "s-1", 2).with_actor_type("customer"))
        .await
        .unwrap();
    s.save_event(&Event::new("SeatFreed", "s-1", 3).with_actor_type("show"))
        .await
        .unwrap();
    assert!(
        read_until(&mut tail, &mut seen, "SeatFreed").await,
        "{seen}"
    );
    assert!(seen.contains("event: malformed"), "{seen}");
    assert!(!seen.contains("CustomerMoved"), "{seen}");
    assert!(seen.contains("\"actorType\":\"show\""), "{seen}");
    assert!(
        read_until(&mut all, &mut all_seen, "SeatFreed").await,
        "{all_seen}"
    );
    assert!(all_seen.contains("CustomerMoved"), "{all_seen}");
    stop.cancel();
}
