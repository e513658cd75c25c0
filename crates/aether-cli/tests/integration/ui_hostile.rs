//! The dashboard under careless and hostile clients, on a real nats-server: stalled and
//! too many live tails, half-sent requests and too many connections, requests for other host
//! names, the token login, unsafe command lines, long histories, the stream page's cost, and
//! a flood of node names on the heartbeat subject.

use std::net::SocketAddr;
use std::time::Duration;

use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_cli::ui::{DashboardConfig, ServeLimits, MAX_HISTORY_PAGE};
use aether_core::{Event, EventBroadcaster, EventStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use assert_cmd::Command;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ui::{
    config, dashboard, dashboard_with_limits, forged_heartbeat, get, start_node, NAMESPACE, TOKEN,
};

/// How long any one distributed step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

fn aether() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aether"));
    cmd.env_remove("NATS_URL")
        .env_remove("NATS_TOKEN")
        .env_remove("NATS_PASSWORD")
        .env_remove("AETHER_UI_TOKEN")
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(60));
    cmd
}

/// Sends `request` on a new connection and returns the connection, unread.
async fn send_raw(addr: SocketAddr, request: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    s
}

/// Reads until the connection ends (EOF or reset); `None` if it is still open at the
/// deadline. Returns what was read.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&all).into_owned()),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Opens a live tail and reads until the dashboard says it follows (`Ok`), or returns the
/// status of a refusal (`Err`).
async fn open_tail(addr: SocketAddr, query: &str) -> Result<TcpStream, u16> {
    let mut s = send_raw(
        addr,
        &format!("GET /api/tail?{query} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    )
    .await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + DEADLINE;
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("the tail answers")
            .unwrap_or(0);
        seen.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&seen);
        if text.contains("event: ready") {
            return Ok(s);
        }
        if n == 0 || (text.contains("\r\n\r\n") && !text.starts_with("HTTP/1.1 200")) {
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            assert!(
                n == 0 || text.contains("\"error\""),
                "a JSON error expected: {text}"
            );
            return Err(status);
        }
    }
}

/// An event with a 2 KB payload.
fn big_event(i: u64) -> Event {
    Event::new("Big", "acc-1", i).with_field("pad", "x".repeat(2048))
}

/// Publishes `n` big events to `namespace` through a bus of its own, and flushes.
async fn flood(url: &str, namespace: &str, n: u64) {
    let client = async_nats::connect(url).await.unwrap();
    let bus = NatsEventBus::new(client.clone(), NatsBusConfig::default())
        .await
        .unwrap();
    for i in 1..=n {
        bus.publish(namespace, &big_event(i)).await.unwrap();
    }
    client.flush().await.unwrap();
}

/// The sum of a counter in `/metrics` over the series whose labels contain `label`.
async fn counter(addr: SocketAddr, metric: &str, label: &str) -> f64 {
    let (_, _, body) = get(addr, "/metrics", &[]).await;
    body.lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_live_tail_drops_the_newest_events_and_says_how_many() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let stop = CancellationToken::new();
    let addr = dashboard(
        &url,
        DashboardConfig {
            tail_buffer: 64,
            ..config(None)
        },
        &stop,
    )
    .await;
    let mut tail = open_tail(addr, "pattern=stall-test").await.unwrap();

    // 20 MB for a reader that reads nothing: more than the sockets hold.
    const EVENTS: u64 = 10_000;
    flood(&url, "stall-test", EVENTS).await;
    let deadline = Instant::now() + DEADLINE;
    while counter(addr, "aether_bus_dropped_total", "namespace=\"stall-test\"").await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "the tail dropped nothing: every event is held for a reader that does not read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The reader comes back: what was kept, then the count of what was not.
    let mut seen = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + DEADLINE;
    let lagged = loop {
        let n = tokio::time::timeout_at(deadline, tail.read(&mut buf))
            .await
            .expect("a lagged notice")
            .unwrap();
        assert!(n > 0, "the tail ended");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(at) = seen.find("event: lagged\ndata: ") {
            let rest = &seen[at + "event: lagged\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                break rest[..end].parse::<u64>().unwrap();
            }
        }
    };
    let delivered = seen.matches("event: event\n").count() as u64;
    assert!(lagged > 0);
    assert!(
        delivered < EVENTS,
        "{delivered} delivered before the notice"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tails_beyond_the_cap_are_refused_until_one_closes() {
    let server = NatsServer::start().unwrap();
    let stop = CancellationToken::new();
    let addr = dashboard(
        &server.url(),
        DashboardConfig {
            max_tails: 2,
            ..config(None)
        },
        &stop,
    )
    .await;
    let first = open_tail(addr, "pattern=a").await.unwrap();
    let _second = open_tail(addr, "pattern=b").await.unwrap();
    let (status, head, body) = get(addr, "/api/tail?pattern=c", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("live tails are open"), "{body}");
    assert!(head.contains("retry-after"), "{head}");

    // One page goes away: its place is free once the dashboard notices.
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    loop {
        match open_tail(addr, "pattern=c").await {
            Ok(_) => break,
            Err(status) => assert_eq!(status, 503),
        }
        assert!(
            Instant::now() < deadline,
            "the closed tail's place stayed taken"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_whose_reader_stops_reading_is_closed_when_idle_and_frees_its_place() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let stop = CancellationToken::new();
    let limits = ServeLimits {
        idle_timeout: Duration::from_secs(2),
        ..ServeLimits::default()
    };
    let addr = dashboard_with_limits(
        &url,
        DashboardConfig {
            max_tails: 1,
            tail_buffer: 16,
            ..config(None)
        },
        limits,
        &stop,
    )
    .await;
    let mut stalled = open_tail(addr, "pattern=idle-test").await.unwrap();
    // Enough to fill the sockets' buffers: then nothing moves on the connection.
    flood(&url, "idle-test", 10_000).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        match open_tail(addr, "pattern=other").await {
            Ok(_) => break,
            Err(status) => assert_eq!(status, 503),
        }
        assert!(
            Instant::now() < deadline,
            "the stalled tail still holds its place"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The server closed the stalled connection: what the sockets held, then the end.
    assert!(
        read_to_close(&mut stalled, DEADLINE).await.is_some(),
        "the stalled tail's connection is still open"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_and_the_dashboard_still_answers() {
    let server = NatsServer::start().unwrap();
    let stop = CancellationToken::new();
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ServeLimits::default()
    };
    let addr = dashboard_with_limits(&server.url(), config(None), limits, &stop).await;
    let mut held = Vec::new();
    for _ in 0..70 {
        held.push(send_raw(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\n")).await);
    }
    // One that sends nothing, one that trickles its headers a byte at a time.
    held.push(TcpStream::connect(addr).await.unwrap());
    let trickle = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}",
            "a".repeat(400)
        );
        for b in request.bytes() {
            if s.write_all(&[b]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    for (i, s) in held.iter_mut().enumerate() {
        let answer = read_to_close(s, DEADLINE).await;
        let answer = answer.unwrap_or_else(|| panic!("half-sent request {i} still open"));
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    assert!(
        tokio::time::timeout(DEADLINE, trickle)
            .await
            .unwrap()
            .unwrap(),
        "the trickling request was never cut off"
    );
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>Aether</title>"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_turned_away_at_once() {
    let server = NatsServer::start().unwrap();
    let stop = CancellationToken::new();
    // A header timeout longer than the test: only the cap closes anything here.
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs(600),
        max_connections: 4,
        ..ServeLimits::default()
    };
    let addr = dashboard_with_limits(&server.url(), config(None), limits, &stop).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(send_raw(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\n")).await);
    }
    let mut extra = send_raw(addr, &format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
    let answer = read_to_close(&mut extra, DEADLINE)
        .await
        .expect("the fifth connection is closed");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
    // The four go away: the dashboard answers again once it noticed.
    drop(held);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut s = send_raw(addr, &format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n")).await;
        if read_to_close(&mut s, DEADLINE)
            .await
            .is_some_and(|a| a.starts_with("HTTP/1.0 200"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the freed places stayed taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_requests_for_this_host_and_port_are_answered() {
    let server = NatsServer::start().unwrap();
    let stop = CancellationToken::new();
    let addr = dashboard(&server.url(), config(None), &stop).await;
    let port = addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, _, body) = get_with_host(addr, "/api/stream", Some(&host)).await;
        assert_ne!(status, 403, "{host}: {body}");
    }
    // A page of another site whose name now points at 127.0.0.1 (DNS rebinding), another
    // port, no Host at all.
    for host in [
        Some(format!("rebind.example:{port}")),
        Some(format!("localhost.rebind.example:{port}")),
        Some("127.0.0.1:1".to_string()),
        None,
    ] {
        for path in [
            "/",
            "/api/cluster",
            "/api/tail",
            "/api/actors/acc-1",
            "/metrics",
        ] {
            let (status, _, body) = get_with_host(addr, path, host.as_deref()).await;
            assert_eq!(status, 403, "{host:?} {path}: {body}");
            assert!(body.contains("localhost"), "{body}");
        }
    }
    stop.cancel();
}

/// A GET with the given `Host` header (or none).
async fn get_with_host(addr: SocketAddr, path: &str, host: Option<&str>) -> (u16, String, String) {
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    let mut s = send_raw(addr, &format!("GET {path} HTTP/1.0\r\n{host}\r\n")).await;
    let text = read_to_close(&mut s, DEADLINE).await.expect("an answer");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_login_redirects_without_the_token_and_sets_a_derived_cookie_named_with_the_port() {
    let server = NatsServer::start().unwrap();
    let stop = CancellationToken::new();
    // Characters a query or a cookie treats specially.
    let token = "p%&#;+= x/?0123456789".replace(' ', "~");
    let addr = dashboard(&server.url(), config(Some(&token)), &stop).await;
    let encoded: String = token
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();

    let (status, head, _) = get(addr, &format!("/?token={encoded}&x=1"), &[]).await;
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("\r\nlocation: /?x=1"), "{head}");
    let cookie_line = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {head}"));
    let name = format!("aether_ui_session_{}", addr.port());
    assert!(cookie_line.contains(&format!("{name}=")), "{cookie_line}");
    assert!(cookie_line.contains("httponly"), "{cookie_line}");
    assert!(cookie_line.contains("samesite=strict"), "{cookie_line}");
    assert!(
        !cookie_line.contains(&token.to_lowercase()),
        "the token itself is in the cookie: {cookie_line}"
    );
    // The header was lower-cased for matching; the value is hex, which it does not change.
    let value = cookie_line
        .split_once(&format!("{name}="))
        .and_then(|(_, v)| v.split(';').next())
        .unwrap()
        .to_string();
    assert_eq!(value.len(), 64, "{value}");
    let session = format!("{name}={value}");
    let (status, _, body) = get(addr, "/?x=1", &[("Cookie", &session)]).await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>Aether</title>"));
    // The cookie of another port, or the raw token as a cookie, opens nothing.
    let elsewhere = format!("aether_ui_session_1={value}");
    assert_eq!(get(addr, "/", &[("Cookie", &elsewhere)]).await.0, 401);
    let raw = format!("{name}={token}");
    assert_eq!(get(addr, "/", &[("Cookie", &raw)]).await.0, 401);
    // Scripts send the token as a bearer header; a wrong one in the query is refused.
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(addr, "/metrics", &[("Authorization", &bearer)]).await.0,
        200
    );
    assert_eq!(get(addr, "/?token=p%26", &[]).await.0, 401);
    stop.cancel();
}

#[test]
fn unsafe_dashboard_options_are_refused_before_anything_starts() {
    let nowhere = format!("nats://127.0.0.1:{}", aether_testkit::free_port().unwrap());
    let error_of = |args: &[&str], env: Option<&str>| {
        let mut cmd = aether();
        cmd.args(args);
        if let Some(v) = env {
            cmd.env("AETHER_UI_TOKEN", v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Every interface without a token: refused, naming the way out; with the flag, a warning
    // and on to connecting.
    for args in [
        &["ui", "--nats", &nowhere, "--listen", "0.0.0.0:0"][..],
        &["demo", "--nats", &nowhere, "--ui", "0.0.0.0:0"][..],
    ] {
        let err = error_of(args, None);
        assert!(err.contains("without an access token"), "{args:?}: {err}");
        assert!(err.contains("--insecure-no-token"), "{args:?}: {err}");
    }
    let err = error_of(
        &[
            "ui",
            "--nats",
            &nowhere,
            "--listen",
            "0.0.0.0:0",
            "--insecure-no-token",
        ],
        None,
    );
    assert!(err.contains("warning: "), "{err}");
    assert!(err.contains("cannot connect to NATS"), "{err}");
    // An empty token is no token, and no silent fallback to none.
    let err = error_of(
        &["ui", "--nats", &nowhere, "--listen", "127.0.0.1:0"],
        Some(""),
    );
    assert!(err.contains("access token is empty"), "{err}");
    // Tokens that could never be typed into a query or a header, or are too short.
    for (token, says) in [
        ("tökentökentökentöken", "non-ASCII"),
        ("two words two words", "a space"),
        ("short", "characters"),
    ] {
        let err = error_of(
            &[
                "ui",
                "--nats",
                &nowhere,
                "--listen",
                "127.0.0.1:0",
                "--ui-token",
                token,
            ],
            None,
        );
        assert!(err.contains(says), "{token}: {err}");
        assert!(!err.contains(token), "the token is printed: {err}");
    }
    // The demo's dashboard takes the token options too.
    let err = error_of(
        &[
            "demo",
            "--actors",
            "3",
            "--nats",
            &nowhere,
            "--ui",
            "0.0.0.0:0",
            "--ui-token",
            TOKEN,
        ],
        None,
    );
    assert!(err.contains("cannot connect to NATS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actors_history_comes_in_pages_of_bounded_size() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let store = JetStreamEventStore::new(client, JetStreamConfig::default().namespace(NAMESPACE))
        .await
        .unwrap();
    let events: Vec<Event> = (1..=700).map(|v| Event::new("Tick", "long", v)).collect();
    for chunk in events.chunks(50) {
        store.save_events("long", chunk).await.unwrap();
    }
    let stop = CancellationToken::new();
    let addr = dashboard(&url, config(None), &stop).await;
    let page = |path: String| async move {
        let (status, _, body) = get(addr, &path, &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let versions = |p: &serde_json::Value| -> Vec<u64> {
        p["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect()
    };

    let first = page("/api/actors/long".into()).await;
    assert_eq!(versions(&first), (1..=100).collect::<Vec<_>>());
    assert_eq!(first["next"], 101);
    assert_eq!(first["latestVersion"], 700);
    let second = page("/api/actors/long?from=101&limit=250".into()).await;
    assert_eq!(versions(&second), (101..=350).collect::<Vec<_>>());
    assert_eq!(second["next"], 351);
    // Asking for everything gets the most a page holds.
    let big = page("/api/actors/long?from=1&limit=1000000".into()).await;
    assert_eq!(versions(&big).len(), MAX_HISTORY_PAGE);
    let last = page("/api/actors/long?from=601&limit=500".into()).await;
    assert_eq!(versions(&last), (601..=700).collect::<Vec<_>>());
    assert_eq!(last["next"], serde_json::Value::Null);
    let beyond = page("/api/actors/long?from=9999".into()).await;
    assert_eq!(versions(&beyond), Vec::<u64>::new());
    let (status, _, body) = get(addr, "/api/actors/long?limit=many", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("{\"error\":"), "{body}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_page_reads_the_streams_info_without_listing_its_subjects() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let store = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default().namespace(NAMESPACE),
    )
    .await
    .unwrap();
    for a in 0..20 {
        store
            .save_event(&Event::new("Opened", format!("acc-{a}"), 1))
            .await
            .unwrap();
    }
    // Every JetStream API request the dashboard makes passes by this subscriber.
    let mut requests = client.subscribe("$JS.API.STREAM.INFO.>").await.unwrap();
    client.flush().await.unwrap();
    let stop = CancellationToken::new();
    let addr = dashboard(&url, config(None), &stop).await;
    let (status, _, body) = get(addr, "/api/stream", &[]).await;
    assert_eq!(status, 200, "{body}");
    // The server answered, so it routed the requests first: a round trip of our own
    // connection brings them all in.
    client.flush().await.unwrap();
    let mut seen = 0;
    while let Some(Some(m)) = requests.next().now_or_never() {
        seen += 1;
        let payload = String::from_utf8_lossy(&m.payload);
        assert!(
            !payload.contains("subjects_filter"),
            "the stream page listed subjects: {payload}"
        );
    }
    assert!(seen >= 1, "no stream info request seen");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["subjects"], 20, "{body}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_nodes_are_forgotten_and_a_flood_of_node_names_stays_within_the_cap() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let node = start_node(&url, "real-node").await;
    node.wait_for_members(&["real-node"], DEADLINE)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let addr = dashboard(
        &url,
        DashboardConfig {
            max_heard_nodes: 20,
            forget_silent_after: Duration::from_secs(3),
            ..config(None)
        },
        &stop,
    )
    .await;
    let members = || async move {
        let (status, _, body) = get(addr, "/api/cluster", &[]).await;
        assert_eq!(status, 200, "{body}");
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["node"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Anyone who may publish on the heartbeat subject names any node, once each.
    let client = async_nats::connect(&url).await.unwrap();
    // An id that breaks the naming rule first: the nodes ignore it, and so must the page.
    // The dashboard's observer subscribes in the background, so both are published again
    // until the marker shows: from then on it hears everything, the ghosts below included.
    let deadline = Instant::now() + DEADLINE;
    loop {
        for node_id in ["<img src=x onerror=alert(1)>", "after-the-bad-one"] {
            let (subject, payload) = forged_heartbeat(node_id, "x");
            client.publish(subject, payload).await.unwrap();
        }
        client.flush().await.unwrap();
        let nodes = members().await;
        if nodes.iter().any(|n| n == "after-the-bad-one") {
            assert!(!nodes.iter().any(|n| n.contains('<')), "{nodes:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the marker node was never shown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..200 {
        let (subject, payload) = forged_heartbeat(&format!("ghost-{i:03}"), "x");
        client.publish(subject, payload).await.unwrap();
    }
    client.flush().await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let nodes = members().await;
        // The table members plus at most the cap of nodes heard.
        assert!(nodes.len() <= 21, "{} members shown", nodes.len());
        if nodes.iter().any(|n| n == "ghost-199") {
            break;
        }
        assert!(Instant::now() < deadline, "the last ghost was never shown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Silent for longer than the dashboard remembers: gone; the live node stays.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let nodes = members().await;
        if !nodes.iter().any(|n| n.starts_with("ghost-")) {
            assert!(nodes.contains(&"real-node".to_string()), "{nodes:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "silent nodes are remembered forever: {} still shown",
            nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    node.shutdown().await.unwrap();
}
