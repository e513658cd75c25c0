//! Helpers shared by the NATS bus tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_core::{Delivery, Event, EventBroadcaster, Subscription};
use aether_testkit::NatsServer;

/// How long a test waits for something that should happen promptly.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn server() -> NatsServer {
    NatsServer::start().expect("starting nats-server")
}

pub async fn bus(server: &NatsServer) -> NatsEventBus {
    NatsEventBus::connect(&server.url(), NatsBusConfig::default())
        .await
        .expect("connecting the bus")
}

pub async fn bus_with(server: &NatsServer, config: NatsBusConfig) -> NatsEventBus {
    NatsEventBus::connect(&server.url(), config)
        .await
        .expect("connecting the bus")
}

/// The next delivery, failing the test after [`DEADLINE`].
pub async fn next(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(DEADLINE, sub.recv())
        .await
        .expect("timed out waiting for a delivery")
        .expect("subscription ended")
}

/// The next event; fails on lag.
pub async fn next_event(sub: &mut Subscription) -> Arc<Event> {
    match next(sub).await {
        Delivery::Event(e) => e,
        Delivery::Lagged(n) => panic!("unexpected lag of {n}"),
    }
}

/// Publishes a marker to `namespace` and asserts that it is the very next thing `sub`
/// receives: everything published before it (by the same publisher) has been delivered, so
/// nothing else is pending for `sub`.
pub async fn assert_nothing_before_marker(
    publisher: &NatsEventBus,
    namespace: &str,
    sub: &mut Subscription,
) {
    let marker = Event::new("Marker", "marker", 1);
    publisher.publish(namespace, &marker).await.unwrap();
    loop {
        let got = next_event(sub).await;
        if got.id == marker.id {
            return;
        }
        // Markers other checks published to the same namespace may come first.
        assert_eq!(
            got.event_type,
            "Marker",
            "expected nothing but markers in {}, got {:?}",
            sub.pattern(),
            got
        );
    }
}

pub fn ev(event_type: &str, actor: &str, version: u64) -> Event {
    Event::new(event_type, actor, version)
}

/// A server with its HTTP monitoring endpoint enabled; returns the monitoring port.
pub fn monitored_server() -> (NatsServer, u16) {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("picking a port")
            .port();
        if let Ok(s) = NatsServer::builder()
            .extra_config(format!("http: \"127.0.0.1:{port}\""))
            .start()
        {
            return (s, port);
        }
    }
    panic!("could not start a monitored nats-server");
}

/// Subscriptions the server holds in total (its `/varz` `subscriptions`).
pub async fn server_subscriptions(http_port: u16) -> u64 {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).expect("monitor");
        s.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("monitor request");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("monitor response");
        let at = body
            .find("\"subscriptions\":")
            .expect("subscriptions in varz");
        body[at + "\"subscriptions\":".len()..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .expect("a number")
    })
    .await
    .expect("monitor task")
}

/// Polls `cond` until it holds, failing the test after [`DEADLINE`].
pub async fn wait_for<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
