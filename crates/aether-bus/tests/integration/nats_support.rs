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

/// A server with its HTTP monitoring endpoint enabled.
pub(crate) fn monitored_server() -> NatsServer {
    NatsServer::builder()
        .monitoring(true)
        .start()
        .expect("a monitored nats-server")
}

/// Subscriptions the server holds in total (its `/varz` `subscriptions`).
pub(crate) async fn server_subscriptions(server: &NatsServer) -> u64 {
    let varz = tokio::task::block_in_place(|| server.monitor("varz")).expect("/varz");
    varz["subscriptions"]
        .as_u64()
        .expect("subscriptions in /varz")
}

/// Opens a bus on a connection of its own made with `options` (credentials, say), as
/// applications do.
pub(crate) async fn connect_with(
    url: &str,
    options: async_nats::ConnectOptions,
    config: aether_bus::NatsBusConfig,
) -> aether_core::Result<aether_bus::NatsEventBus> {
    let connection = aether_nats::Connection::connect(url, options).await?;
    aether_bus::NatsEventBus::open(&connection, config).await
}
