//! A command's trace crosses nodes: the trace context set on a command sent from one node
//! arrives on the owning node (in the request's `traceparent` header and the command's
//! metadata), on that node's `actor_request` span, and on the stored events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aether_actor::{CommandMeta, Envelope};
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::{ActorKey, EventStore, TraceContext, METADATA_SPAN_ID, METADATA_TRACE_ID};
use aether_placement::ShardConfig;
use aether_store::InMemoryEventStore;
use aether_testkit::NatsServer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::support::{Bank, Command};

/// The fields of every `actor_request` span, by span id, from every thread.
#[derive(Default, Clone)]
struct Spans(Arc<Mutex<HashMap<u64, HashMap<String, String>>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() != "actor_request" {
            return;
        }
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().insert(id.into_u64(), fields);
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(fields) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

/// Installed once for the whole test binary: spans of every test are recorded (only
/// `actor_request` ones, and only their fields).
fn spans() -> Spans {
    static SPANS: OnceLock<Spans> = OnceLock::new();
    SPANS
        .get_or_init(|| {
            let spans = Spans::default();
            let subscriber = tracing_subscriber::registry().with(spans.clone());
            // With the feature, spans also get OpenTelemetry contexts (a no-op tracer: nothing
            // is exported; the contexts are what is checked).
            #[cfg(feature = "opentelemetry")]
            let subscriber = subscriber.with(tracing_opentelemetry::layer());
            tracing::subscriber::set_global_default(subscriber)
                .expect("the only global subscriber of this test binary");
            spans
        })
        .clone()
}

async fn two_nodes(cluster: &str) -> (NatsServer, Arc<InMemoryEventStore>, Vec<ClusterNode>) {
    let server = NatsServer::start().expect("nats-server");
    let store = Arc::new(InMemoryEventStore::new());
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let actors = Actors::new(Arc::clone(&store) as _).with(Bank);
        let config = config(id).cluster_name(cluster);
        nodes.push(
            ClusterNode::start(client, config, actors)
                .await
                .expect("node"),
        );
    }
    for n in &nodes {
        n.wait_for_members(&["a", "b"], Duration::from_secs(30))
            .await
            .expect("members");
    }
    (server, store, nodes)
}

/// An actor that "b" owns.
fn owned_by_b(nodes: &[ClusterNode]) -> String {
    (0..1000)
        .map(|i| format!("acct-{i}"))
        .find(|a| nodes[0].owner_of(a).as_deref() == Some("b"))
        .expect("an actor owned by b")
}

fn config(node: &str) -> ClusterConfig {
    ClusterConfig::default()
        .cluster_name("traced")
        .node_id(node)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .shards(ShardConfig::default().shard_count(32))
        .storage(aether_core::StorageKind::Memory)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_trace_reaches_the_owning_nodes_span_and_the_stored_events() {
    let spans = spans();
    let (_server, store, nodes) = two_nodes("traced").await;
    // An actor that "b" owns, sent from "a": the command crosses nodes.
    let actor = owned_by_b(&nodes);
    let trace = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .expect("a valid traceparent");
    let envelope = Envelope::new(Command::Deposit { amount: 5 })
        .with_meta(CommandMeta::new().trace(trace.clone()));
    nodes[0]
        .send_envelope::<Bank>(&actor, envelope)
        .await
        .expect("deposit");

    let events = store
        .events_of(ActorKey::new("bank", &actor), 1)
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].metadata_value(METADATA_TRACE_ID),
        Some(trace.trace_id())
    );
    assert_eq!(
        events[0].metadata_value(METADATA_SPAN_ID),
        Some(trace.span_id())
    );

    let on_b: Vec<HashMap<String, String>> = spans
        .0
        .lock()
        .unwrap()
        .values()
        .filter(|f| f.get("node").map(String::as_str) == Some("b"))
        .filter(|f| f.get("actor_id") == Some(&actor))
        .cloned()
        .collect();
    assert!(
        on_b.iter().any(
            |f| f.get("trace_id").map(String::as_str) == Some(trace.trace_id())
                && f.get("parent_span_id").map(String::as_str) == Some(trace.span_id())
        ),
        "the owning node's span carries the trace: {on_b:?}"
    );
    for n in nodes {
        n.shutdown().await.expect("shutdown");
    }
}

/// With OpenTelemetry, a command sent inside a span that is part of a trace joins it without
/// being told: the owner's span and the events carry the caller's trace id.
#[cfg(feature = "opentelemetry")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_opentelemetry_a_command_joins_the_current_spans_trace() {
    use tracing::Instrument;
    let spans = spans();
    let (_server, store, nodes) = two_nodes("otel").await;
    let actor = owned_by_b(&nodes);
    let remote = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .expect("a valid traceparent");
    let caller = tracing::info_span!("http_request");
    aether_actor::otel::set_parent(&caller, &remote);
    nodes[0]
        .send::<Bank>(&actor, Command::Deposit { amount: 1 })
        .instrument(caller)
        .await
        .expect("deposit");
    let events = store
        .events_of(ActorKey::new("bank", &actor), 1)
        .await
        .expect("events");
    assert_eq!(
        events[0].metadata_value(METADATA_TRACE_ID),
        Some(remote.trace_id())
    );
    let carried = spans.0.lock().unwrap().values().any(|f| {
        f.get("node").map(String::as_str) == Some("b")
            && f.get("actor_id") == Some(&actor)
            && f.get("trace_id").map(String::as_str) == Some(remote.trace_id())
    });
    assert!(carried, "the owner's span carries the caller's trace");
    for n in nodes {
        n.shutdown().await.expect("shutdown");
    }
}
