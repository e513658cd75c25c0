//! The NATS bus across a server restart: subscriptions made before it keep receiving after
//! it, and publishing works again, without the application doing anything. Every event
//! published with `Ok` meanwhile reaches each subscription or is reported to it as lag.
#![cfg(feature = "nats")]

use std::time::Duration;

use crate::nats_support::*;
use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_core::{Delivery, Event, EventBroadcaster, Subscription};
use aether_testkit::TcpProxy;

/// Events published while the server is down.
const OUTAGE: u64 = 20;

/// What one subscription got of the publisher's events since the restart began: events
/// delivered, and events reported as lag. Together they must account for every publish that
/// returned `Ok`: none may vanish.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    lagged: u64,
}

impl Tally {
    /// Counts `d`, and returns the event if it is one.
    fn count(&mut self, d: Delivery) -> Option<std::sync::Arc<Event>> {
        match d {
            Delivery::Event(e) => {
                self.delivered += 1;
                Some(e)
            }
            Delivery::Lagged(n) => {
                self.lagged += n;
                None
            }
        }
    }
}

/// Publishes probes tagged `tag` until one reaches `sub`, counting what `sub` receives on the
/// way in `tally` and the publishes that returned `Ok` in `ok`.
async fn probe_until_delivered(
    publisher: &NatsEventBus,
    sub: &mut Subscription,
    tag: &str,
    tally: &mut Tally,
    ok: &mut u64,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    for k in 1u64.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no probe got through after the restart"
        );
        // Publishing may fail while the client reconnects; it is retried with the next probe.
        if publisher
            .publish("orders", &ev("Probe", tag, k))
            .await
            .is_ok()
        {
            *ok += 1;
        }
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            if let Some(e) = tally.count(d) {
                if e.event_type == "Probe" && e.actor_id == tag && e.version == k {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_server_restart() {
    let mut server = server();
    let a = bus(&server).await;
    // `b` reaches the server through a proxy, which the test keeps closed after the restart
    // until `a` has delivered what it published during the outage to the server: those events
    // then certainly reach no subscriber of `b`, and must come out as lag. (Left to the race
    // between the two clients' reconnects, `b` is usually back first and nothing is lost.)
    let proxy = TcpProxy::start(server.port()).expect("a proxy to the server");
    let b = crate::nats_support::connect_with(
        &proxy.nats_url(),
        async_nats::ConnectOptions::new().ignore_discovered_servers(),
        NatsBusConfig::default(),
    )
    .await
    .expect("connecting the bus through the proxy");
    let mut remote = b.subscribe("orders").await.unwrap();
    let mut wildcard = b.subscribe(">").await.unwrap();
    let mut local = a.subscribe("orders").await.unwrap();

    a.publish("orders", &ev("Before", "x", 1)).await.unwrap();
    for sub in [&mut remote, &mut wildcard, &mut local] {
        assert_eq!(next_event(sub).await.event_type, "Before");
    }

    // Publishes from here on that returned `Ok`, and what each subscription got of them.
    let mut ok = 0u64;
    let mut tallies: [Tally; 3] = Default::default();
    tokio::task::block_in_place(|| server.stop()).expect("stopping nats-server");
    // Published while the server is down: the client takes them (and sends them once it is
    // back, or loses them); either way none may vanish for a subscriber.
    for v in 1..=OUTAGE {
        let sent = tokio::time::timeout(DEADLINE, a.publish("orders", &ev("Outage", "x", v)))
            .await
            .expect("a publish during the outage hung");
        if sent.is_ok() {
            ok += 1;
        }
    }
    let outage_ok = ok;
    proxy.cut();
    tokio::task::block_in_place(|| server.start_again()).expect("restarting nats-server");
    // A flush is answered once the server has read everything sent before it: `a` is back
    // and its outage events are through, to no subscriber of `b`'s.
    tokio::time::timeout(DEADLINE, a.client().flush())
        .await
        .expect("the publisher never reconnected")
        .expect("flushing the publisher's connection");
    proxy.heal();

    // No re-subscribe: the same subscriptions receive again once the clients are back.
    probe_until_delivered(&a, &mut remote, "remote", &mut tallies[0], &mut ok).await;
    probe_until_delivered(&a, &mut wildcard, "wildcard", &mut tallies[1], &mut ok).await;
    // Everything published from now on arrives, in order, on every subscription.
    for v in 1..=100 {
        a.publish("orders", &ev("After", "x", v)).await.unwrap();
        ok += 1;
    }
    for (sub, tally) in [&mut remote, &mut wildcard, &mut local]
        .into_iter()
        .zip(&mut tallies)
    {
        let mut next_version = 1;
        while next_version <= 100 {
            // Outage events and probes from before, or lag, come first.
            if let Some(e) = tally.count(next(sub).await) {
                if e.event_type == "After" {
                    assert_eq!(e.version, next_version);
                    next_version += 1;
                }
            }
        }
    }
    for (name, tally) in ["remote", "wildcard", "local"].iter().zip(&tallies) {
        eprintln!(
            "{name}: {ok} published with Ok ({outage_ok} of {OUTAGE} during the outage): \
             {} delivered, {} reported as lag",
            tally.delivered, tally.lagged
        );
        assert_eq!(
            tally.delivered + tally.lagged,
            ok,
            "{name}: events published with Ok must be delivered or reported as lag: {tally:?}"
        );
    }
    // `b`'s subscriptions were away while the outage events went through: lost for them, and
    // reported. Subscribers of the publishing bus get its events directly, outage or not.
    for (name, tally) in ["remote", "wildcard"].iter().zip(&tallies) {
        assert!(
            tally.lagged >= outage_ok,
            "{name}: {outage_ok} events went through while it was away, {} reported as lag",
            tally.lagged
        );
    }
    assert_eq!(tallies[2].lagged, 0, "the local subscriber lagged");
    // And the other direction works too.
    b.publish("orders", &ev("FromB", "y", 1)).await.unwrap();
    let mut from_b = false;
    while !from_b {
        if let Delivery::Event(e) = next(&mut local).await {
            from_b = e.event_type == "FromB";
        }
    }
    // The client reports its events asynchronously.
    wait_for(|| async { a.monitor().disconnects() >= 1 && b.monitor().disconnects() >= 1 }).await;
    assert_eq!(b.metrics().active_subscriptions, 2);
}
