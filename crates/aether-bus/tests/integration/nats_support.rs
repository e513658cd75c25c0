//! Helpers shared by the NATS bus tests; the delivery helpers are the contract suites' own.
#![cfg(feature = "nats")]
#![allow(dead_code)]

use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_core::Event;
use aether_testkit::NatsServer;

pub(crate) use aether_testkit::contract::{
    assert_nothing_before_marker, next, next_event, wait_for, DEADLINE,
};

pub(crate) fn server() -> NatsServer {
    NatsServer::start().expect("starting nats-server")
}

pub(crate) async fn bus(server: &NatsServer) -> NatsEventBus {
    NatsEventBus::connect(&server.url(), NatsBusConfig::default())
        .await
        .expect("connecting the bus")
}

pub(crate) async fn bus_with(server: &NatsServer, config: NatsBusConfig) -> NatsEventBus {
    NatsEventBus::connect(&server.url(), config)
        .await
        .expect("connecting the bus")
}

pub(crate) fn ev(event_type: &str, actor: &str, version: u64) -> Event {
    Event::new(event_type, actor, version)
}

/// A server with its HTTP monitoring endpoint enabled; returns the monitoring port.
pub(crate) fn monitored_server() -> (NatsServer, u16) {
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
pub(crate) async fn server_subscriptions(http_port: u16) -> u64 {
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
