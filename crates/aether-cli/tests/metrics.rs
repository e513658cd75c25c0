//! The dashboard's `/metrics`, in a test binary of its own: the metrics registry belongs to
//! the whole process, so saves made by the integration binary's other tests, running at the
//! same time, would move the store's counters this test checks.

use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_core::{Event, EventBroadcaster, EventStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

#[path = "integration/serve.rs"]
mod serve;

use serve::{config, dashboard, get, NAMESPACE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_the_prometheus_format_and_move_with_saves_conflicts_and_publishes() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let stop = CancellationToken::new();
    let client = async_nats::connect(&url).await.unwrap();
    let store = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default().namespace(NAMESPACE),
    )
    .await
    .unwrap();
    let addr = dashboard(&url, config(None), &stop).await;
    let scrape = || async move {
        let (status, head, body) = get(addr, "/metrics", &[]).await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        let lines = body.lines().map(|l| Ok(l.to_string()));
        prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
    };
    let value = |scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let ok = [
        ("store", "jetstream"),
        ("op", "save_event"),
        ("outcome", "ok"),
    ];
    let conflict = [
        ("store", "jetstream"),
        ("op", "save_event"),
        ("outcome", "conflict"),
    ];
    let published = [("namespace", "metrics-test")];
    let bus = NatsEventBus::new(client, NatsBusConfig::default())
        .await
        .unwrap();

    // This binary has no other test, so the process's registry moves with this test's
    // operations alone: exactly two saves, one conflict and one publish.
    let before = scrape().await;
    store
        .save_event(&Event::new("Opened", "m-1", 1))
        .await
        .unwrap();
    store
        .save_event(&Event::new("Deposited", "m-1", 2))
        .await
        .unwrap();
    let err = store.save_event(&Event::new("Deposited", "m-1", 2)).await;
    assert!(err.is_err());
    bus.publish("metrics-test", &Event::new("Ping", "m-1", 3))
        .await
        .unwrap();
    let after = scrape().await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(
        delta("aether_store_operations_total", &ok),
        2.0,
        "saves counted"
    );
    assert_eq!(
        delta("aether_store_operations_total", &conflict),
        1.0,
        "conflicts counted"
    );
    assert_eq!(
        delta("aether_bus_published_total", &published),
        1.0,
        "bus publishes counted"
    );
    assert!(
        value(
            &after,
            "aether_store_errors_total",
            &[("kind", "version_conflict")]
        ) >= 1.0
    );
    // Latency histograms, with buckets.
    assert!(after
        .samples
        .iter()
        .any(|s| s.metric == "aether_store_operation_seconds"
            && matches!(s.value, prometheus_parse::Value::Histogram(_))));
    stop.cancel();
}
