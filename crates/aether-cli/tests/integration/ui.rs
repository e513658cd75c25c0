//! The dashboard (`aether ui`): in a real headless Chromium against a three-node cluster on a
//! real nats-server, and its answers to bad input. `/metrics` is tested in a binary of its
//! own (`tests/metrics.rs`).
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` (scripts/test installs
//! them); `AETHER_CHROMIUM` and `AETHER_CHROMEDRIVER` point elsewhere. Screenshots of every
//! page go to `target/ui-screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aether_bus::{NatsBusConfig, NatsEventBus};
use aether_cli::demo::{Bank, BankCommand};
use aether_cluster::{Actors, ClusterConfig, ClusterNode};
use aether_core::{Event, EventBroadcaster, EventStore, SnapshotStore};
use aether_store::{JetStreamConfig, JetStreamEventStore, Notify};
use aether_testkit::NatsServer;
use fantoccini::{Client, ClientBuilder};
use tokio_util::sync::CancellationToken;

pub(crate) use crate::serve::{config, dashboard, dashboard_with_limits, get, CLUSTER, NAMESPACE};
/// An access token the dashboard accepts.
pub(crate) const TOKEN: &str = "s3cret-0123456789";

/// A heartbeat of `node_id` at `incarnation` on the test cluster's heartbeat subject, written
/// by hand as any client allowed on the cluster's subjects can write one (the library keeps
/// its wire format private): the subject and the payload.
pub(crate) fn forged_heartbeat(node_id: &str, incarnation: &str) -> (String, bytes::Bytes) {
    let body = serde_json::json!({
        "v": 2,
        "body": { "nodeId": node_id, "incarnation": incarnation, "seq": 0 },
    });
    (
        format!("aether.cluster.{CLUSTER}.members.heartbeat"),
        serde_json::to_vec(&body).expect("encodes").into(),
    )
}

pub(crate) async fn start_node(url: &str, id: &str) -> ClusterNode {
    let client = async_nats::connect(url).await.unwrap();
    let bus = NatsEventBus::new(client.clone(), NatsBusConfig::default())
        .await
        .unwrap();
    let store: Arc<dyn SnapshotStore> = Arc::new(Notify::new(
        JetStreamEventStore::new(
            client.clone(),
            JetStreamConfig::default().namespace(NAMESPACE),
        )
        .await
        .unwrap(),
        Arc::new(bus),
        "bank",
    ));
    let config = ClusterConfig::default()
        .cluster_name(CLUSTER)
        .node_id(id)
        .heartbeat_interval(Duration::from_millis(100))
        .failure_timeout(Duration::from_secs(1))
        .shards(aether_placement::ShardConfig::default().shard_count(24))
        .storage(aether_core::StorageKind::Memory);
    ClusterNode::start(client, config, Actors::new(store).with(Bank))
        .await
        .unwrap()
}

fn binary(var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: install Debian's {package} (`apt-get install chromium chromium-driver`; \
         scripts/test does it) or set {var}",
        path.display()
    );
    path
}

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let bin = binary(
        "AETHER_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromium-driver",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn browser(driver: &Driver) -> Client {
    let chromium = binary("AETHER_CHROMIUM", "/usr/bin/chromium", "chromium");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"],
        }),
    );
    // Retried while chromedriver is still starting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(c) => return c,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no browser session: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `script` (which returns a value) until `done` holds for its result.
async fn wait_js(
    c: &Client,
    what: &str,
    script: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if done(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: last {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nothing hostile became an element or ran.
async fn assert_no_markup_ran(c: &Client) {
    let v = c
        .execute(
            "return { imgs: document.querySelectorAll('main img, main b').length,\
                      pwned: window.pwned === undefined ? null : window.pwned };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(v, serde_json::json!({ "imgs": 0, "pwned": null }));
}

async fn no_errors(c: &Client, page: &str) {
    let errors = c
        .execute(
            "return window.aetherErrors || ['app.js did not run'];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(errors, serde_json::json!([]), "errors on the {page} page");
}

async fn screenshot(c: &Client, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

const OWNERS: &str = "return [...new Set([...document.querySelectorAll('#shard-map .shard')]\
                      .map(e => e.dataset.owner).filter(o => o))].sort();";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_browser_follows_a_cluster_losing_a_node() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let ids = ["node-a", "node-b", "node-c"];
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(start_node(&url, id).await);
    }
    for n in &nodes {
        n.wait_for_members(&ids, Duration::from_secs(30))
            .await
            .unwrap();
    }
    nodes[0]
        .send::<Bank>(
            "acc-1",
            BankCommand::Open {
                owner: "Ada".into(),
            },
        )
        .await
        .unwrap();
    nodes[1]
        .send::<Bank>("acc-1", BankCommand::Deposit(70))
        .await
        .unwrap();
    nodes[2]
        .send::<Bank>("acc-1", BankCommand::Withdraw(20))
        .await
        .unwrap();

    // A history longer than a page.
    let client = async_nats::connect(&url).await.unwrap();
    let store = JetStreamEventStore::new(
        client.clone(),
        JetStreamConfig::default().namespace(NAMESPACE),
    )
    .await
    .unwrap();
    let long: Vec<Event> = (1..=120)
        .map(|v| Event::new("Tick", "acc-long", v))
        .collect();
    store.save_events("acc-long", &long).await.unwrap();

    let stop = CancellationToken::new();
    let addr = dashboard(&url, config(None), &stop).await;
    let driver = chromedriver();
    let c = browser(&driver).await;
    let base = format!("http://{addr}/");

    // The cluster: three owners on the shard map, and the members table.
    c.goto(&format!("{base}#cluster")).await.unwrap();
    let owners = wait_js(&c, "three owners on the shard map", OWNERS, |v| {
        v.as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    assert_eq!(owners, serde_json::json!(ids));
    wait_js(
        &c,
        "three live members",
        "return document.querySelectorAll('#members .alive').length;",
        |v| v == 3,
    )
    .await;
    no_errors(&c, "cluster").await;
    screenshot(&c, "cluster-three-nodes").await;

    // A node name that is markup breaks the naming rule: the page ignores it, as the nodes
    // do, and runs nothing. A well-named node heard after it shows that it was read.
    let hostile_node = r#"<img src=x onerror="window.pwned=1">"#;
    for (node_id, incarnation) in [(hostile_node, "<b>i</b>"), ("after-markup", "i-1")] {
        let (subject, payload) = forged_heartbeat(node_id, incarnation);
        client.publish(subject, payload).await.unwrap();
    }
    let rows = wait_js(
        &c,
        "the node heard after the hostile one",
        "const rows = [...document.querySelectorAll('#members tr[data-node]')]\
         .map(r => r.dataset.node);\
         return rows.includes('after-markup') ? rows : null;",
        |v| v.is_array(),
    )
    .await;
    assert!(
        !rows.to_string().contains("<img"),
        "a node id that breaks the naming rule is shown: {rows}"
    );
    assert_no_markup_ran(&c).await;

    // Each refresh waits for the previous answer: with answers slowed to 2.5 s, never more
    // than one request at a time.
    c.execute(
        "window.slowCalls = 0; window.inFlight = 0; window.maxInFlight = 0;\
         window.realFetch = window.fetch;\
         window.fetch = (...a) => { window.slowCalls++; window.inFlight++;\
           window.maxInFlight = Math.max(window.maxInFlight, window.inFlight);\
           return new Promise(r => setTimeout(r, 2500)).then(() => window.realFetch(...a))\
             .finally(() => { window.inFlight--; }); };\
         return true;",
        vec![],
    )
    .await
    .unwrap();
    let max = wait_js(
        &c,
        "three slowed refreshes",
        "return window.slowCalls >= 3 ? window.maxInFlight : null;",
        |v| !v.is_null(),
    )
    .await;
    assert_eq!(max, 1, "refreshes overlapped");
    c.execute("window.fetch = window.realFetch; return true;", vec![])
        .await
        .unwrap();

    // One node killed: the map shows the two others once the leader has moved its shards.
    let killed = nodes.remove(2);
    killed.kill().await;
    let owners = wait_js(&c, "two owners on the shard map", OWNERS, |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(owners, serde_json::json!(["node-a", "node-b"]));
    no_errors(&c, "cluster").await;
    screenshot(&c, "cluster-node-killed").await;

    // The live tail shows an event published while it is open.
    c.goto(&format!("{base}#tail")).await.unwrap();
    wait_js(
        &c,
        "the tail to follow",
        "return document.getElementById('tail-status').textContent;",
        |v| v.as_str().is_some_and(|s| s.starts_with("Following")),
    )
    .await;
    nodes[0]
        .send::<Bank>("acc-2", BankCommand::Open { owner: "Bo".into() })
        .await
        .unwrap();
    wait_js(
        &c,
        "the event in the tail",
        "return document.querySelectorAll('.tail-row[data-actor=\"acc-2\"]').length;",
        |v| v.as_u64().is_some_and(|n| n >= 1),
    )
    .await;
    // The rows sit in the table's one body, each cell under its header.
    let layout = c
        .execute(
            "const t = document.getElementById('tail');\
             const heads = [...t.querySelectorAll('thead th')].map(h => Math.round(h.getBoundingClientRect().left));\
             const row = t.querySelector('.tail-row');\
             const cells = [...row.cells].map(d => Math.round(d.getBoundingClientRect().left));\
             return { bodies: t.querySelectorAll('tbody').length,\
                      body: t.tBodies[0].id, rowParent: row.parentElement.id, heads, cells };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(layout["bodies"], 1, "{layout}");
    assert_eq!(layout["body"], "tail-list", "{layout}");
    assert_eq!(layout["rowParent"], "tail-list", "{layout}");
    assert_eq!(
        layout["heads"], layout["cells"],
        "cells not under their headers"
    );
    // An event type that is markup shows as text.
    let hostile_type = "<img src=x onerror=\"window.pwned=2\">";
    let bus = NatsEventBus::new(client.clone(), NatsBusConfig::default())
        .await
        .unwrap();
    bus.publish("ui-hostile", &Event::new(hostile_type, "acc-h", 1))
        .await
        .unwrap();
    let shown = wait_js(
        &c,
        "the hostile event's row",
        "const r = document.querySelector('.tail-row[data-actor=\"acc-h\"]');\
         return r ? r.cells[3].textContent : null;",
        |v| v.is_string(),
    )
    .await;
    assert_eq!(shown, hostile_type);
    assert_no_markup_ran(&c).await;
    no_errors(&c, "tail").await;
    screenshot(&c, "tail").await;

    // An actor's history, decoded, with metadata: the accounts are actors of type `bank`.
    c.goto(&format!("{base}#actor/acc-1?type=bank"))
        .await
        .unwrap();
    let types = wait_js(
        &c,
        "acc-1's history",
        "return [...document.querySelectorAll('#actor-events .actor-event td:nth-child(2)')]\
         .map(e => e.textContent);",
        |v| v.as_array().is_some_and(|a| a.len() == 3),
    )
    .await;
    assert_eq!(
        types,
        serde_json::json!(["AccountOpened", "Deposited", "Withdrawn"])
    );
    let shown_type = c
        .execute(
            "return document.getElementById('actor-type').dataset.actorType;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown_type, "bank");
    no_errors(&c, "actor").await;
    screenshot(&c, "actor").await;

    // A long history: a page, then the next.
    c.goto(&format!("{base}#actor/acc-long")).await.unwrap();
    wait_js(
        &c,
        "the first page of acc-long",
        "return document.querySelectorAll('#actor-events .actor-event').length;",
        |v| v == 100,
    )
    .await;
    c.execute(
        "document.getElementById('next-page').click(); return true;",
        vec![],
    )
    .await
    .unwrap();
    let versions = wait_js(
        &c,
        "the second page of acc-long",
        "return [...document.querySelectorAll('#actor-events .actor-event td:first-child')]\
         .map(e => Number(e.textContent));",
        |v| v.as_array().is_some_and(|a| a.len() == 20),
    )
    .await;
    assert_eq!(versions, serde_json::json!((101..=120).collect::<Vec<_>>()));
    assert!(c
        .execute("return !!document.getElementById('first-page') && !document.getElementById('next-page');", vec![])
        .await
        .unwrap()
        .as_bool()
        .unwrap());
    no_errors(&c, "actor").await;

    // An unknown actor: a clear message on the page.
    c.goto(&format!("{base}#actor/nobody")).await.unwrap();
    wait_js(
        &c,
        "the unknown actor's message",
        "const e = document.querySelector('.error'); return e ? e.textContent : '';",
        |v| v.as_str().is_some_and(|s| s.contains("no events")),
    )
    .await;

    // The stream and the projections pages render.
    c.goto(&format!("{base}#stream")).await.unwrap();
    wait_js(
        &c,
        "the stream's figures",
        "return document.querySelectorAll('#stream-cards .card').length;",
        |v| v.as_u64().is_some_and(|n| n >= 4),
    )
    .await;
    no_errors(&c, "stream").await;
    screenshot(&c, "stream").await;
    c.goto(&format!("{base}#projections")).await.unwrap();
    wait_js(
        &c,
        "the projections page",
        "return document.querySelector('main h2') ? document.querySelector('main h2').textContent : '';",
        |v| v == "Projections",
    )
    .await;
    no_errors(&c, "projections").await;
    screenshot(&c, "projections").await;
    // The timers page: a timer whose actor id is markup (from 2.12, which has timers); before,
    // the page says there is no timers stream.
    let with_timers = server.version().at_least(2, 12);
    if with_timers {
        let client = async_nats::connect(&url).await.unwrap();
        let timers = aether_reactions::JetStreamTimers::open(
            async_nats::jetstream::new(client),
            aether_reactions::TimersConfig {
                storage: aether_core::StorageKind::Memory,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let record = aether_core::TimerRecord {
            name: "expire".into(),
            due: chrono::Utc::now() + chrono::Duration::minutes(10),
            command: serde_json::json!("Expire"),
        };
        timers
            .set(
                aether_core::ActorKey::new("hold", "<img src=x onerror=\"window.pwned=1\">"),
                &record,
            )
            .await
            .unwrap();
    }
    c.goto(&format!("{base}#timers")).await.unwrap();
    wait_js(
        &c,
        "the timers page",
        "return document.querySelector('#timers-cards') ? 'timers'\
         : document.querySelector('#timers-missing') ? 'missing' : '';",
        |v| v == if with_timers { "timers" } else { "missing" },
    )
    .await;
    if with_timers {
        let listed = c
            .execute(
                "return [...document.querySelectorAll('#timers tr.timer')].map(r => r.dataset.actor);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            listed,
            serde_json::json!(["<img src=x onerror=\"window.pwned=1\">"])
        );
    }
    assert_no_markup_ran(&c).await;
    no_errors(&c, "timers").await;
    screenshot(&c, "timers").await;

    c.close().await.unwrap();
    stop.cancel();
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_answers_bad_input_a_wrong_token_and_a_lost_server_with_clear_errors() {
    let mut server = NatsServer::start().unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let store = JetStreamEventStore::new(client, JetStreamConfig::default().namespace(NAMESPACE))
        .await
        .unwrap();
    store
        .save_event(&Event::new("Opened", "acc-1", 1))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let addr = dashboard(&url, config(Some(TOKEN)), &stop).await;

    // Without the token: refused (the login itself is tested in ui_hostile).
    let (status, _, body) = get(addr, "/", &[]).await;
    assert_eq!(status, 401);
    assert!(body.contains("token"), "{body}");
    assert_eq!(get(addr, "/?token=wrong", &[]).await.0, 401);
    assert_eq!(
        get(addr, "/api/cluster", &[("Authorization", "Bearer nope")])
            .await
            .0,
        401
    );
    let bearer_value = format!("Bearer {TOKEN}");
    let bearer = [("Authorization", bearer_value.as_str())];
    let (status, head, body) = get(addr, "/", &bearer).await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>Aether</title>"));
    assert!(head.contains("content-security-policy"), "{head}");
    assert_eq!(get(addr, "/app.js", &bearer).await.0, 200);

    // Hostile and unknown input: clear errors, and the server goes on.
    let (status, _, body) = get(addr, "/api/actors/nobody", &bearer).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no events"), "{body}");
    let long = "x".repeat(5000);
    let (status, _, body) = get(addr, &format!("/api/actors/{long}"), &bearer).await;
    assert_eq!(status, 400, "{body}");
    for hostile in ["%00", "a%0Ab", "%E2%80%AE", "..%2F..%2Fetc", "%3Cscript%3E"] {
        let (status, _, body) = get(addr, &format!("/api/actors/{hostile}"), &bearer).await;
        assert!(matches!(status, 400 | 404), "{hostile}: {status} {body}");
        assert!(body.starts_with("{\"error\":"), "{hostile}: {body}");
    }
    let (status, _, body) = get(addr, "/api/tail?pattern=a..b", &bearer).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = get(addr, "/api/tail?pattern=%3E&actor=a.%3E.b", &bearer).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(get(addr, "/nothing/here", &bearer).await.0, 404);
    let (status, _, body) = get(addr, "/api/cluster", &bearer).await;
    assert_eq!(status, 404, "no node of this cluster ever ran: {body}");
    let (status, _, body) = get(addr, "/api/actors/acc-1", &bearer).await;
    assert_eq!(status, 200, "{body}");

    // The server goes away: errors, not a crash; it answers again once NATS is back.
    server.stop().unwrap();
    let (status, _, body) = get(addr, "/api/actors/acc-1", &bearer).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("{\"error\":"), "{body}");
    assert_eq!(get(addr, "/", &bearer).await.0, 200);
    stop.cancel();
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Opened {
    Opened {},
}

impl aether_actor::DomainEvent for Opened {
    fn event_type(&self) -> &'static str {
        "Opened"
    }
}

/// A sink that keeps its position with its updates, as the exactly-once setup does.
#[derive(Default)]
struct SinkKeepsPosition(std::sync::Mutex<Option<aether_core::LogPosition>>);

#[async_trait::async_trait]
impl aether_projection::Handler<Opened> for SinkKeepsPosition {
    async fn handle(
        &self,
        e: &aether_projection::Projected<Opened>,
    ) -> Result<(), aether_core::BoxError> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.position);
        Ok(())
    }

    async fn position(
        &self,
        _projection: &str,
    ) -> Result<aether_projection::SinkPosition, aether_core::BoxError> {
        Ok(aether_projection::SinkPosition::Kept(
            *self.0.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projections_page_shows_a_projection_whose_sink_keeps_its_position() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let store = Arc::new(
        JetStreamEventStore::new(
            client.clone(),
            JetStreamConfig::default().namespace(NAMESPACE),
        )
        .await
        .unwrap(),
    );
    for v in 1..=3 {
        store
            .save_event(&Event::new("Opened", "acc-1", v))
            .await
            .unwrap();
    }
    let state = Arc::new(
        aether_projection::NatsProjectionStore::open(
            client,
            aether_projection::DEFAULT_PROJECTION_BUCKET,
            aether_core::StorageKind::Memory,
        )
        .await
        .unwrap(),
    );
    let projection = aether_projection::Projection::new(
        "exactly-once",
        store,
        state,
        Arc::new(SinkKeepsPosition::default()),
        aether_actor::EventCodec::<Opened>::default(),
        aether_projection::ProjectionConfig::default(),
    )
    .unwrap();
    // Catching up reports the status at its end; no checkpoint is ever written.
    let report = projection.catch_up().await.unwrap();
    assert_eq!(report.handled, 3);

    let stop = CancellationToken::new();
    let addr = dashboard(&url, config(None), &stop).await;
    let (status, _, body) = get(addr, "/api/projections", &[]).await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listed = page["projections"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "exactly-once"))
        .unwrap_or_else(|| panic!("the projection is not listed: {body}"));
    assert_eq!(listed["keptBy"], "sink", "{body}");
    assert_eq!(listed["lag"], 0, "{body}");
    assert_eq!(listed["parked"], 0, "{body}");
    assert_eq!(listed["position"]["sequence"], 3, "{body}");
    assert_eq!(listed["stale"], false, "{body}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timers_page_lists_the_next_timers_within_its_bound_and_the_reactors_backlog() {
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let stop = CancellationToken::new();
    let addr = dashboard(&url, config(None), &stop).await;

    // No timers stream: the page says why, and still shows the reactor (no bucket yet).
    let (status, _, body) = get(addr, "/api/timers", &[]).await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let missing = page["missing"].as_str().unwrap_or_default();
    assert!(missing.contains("AETHER_TIMERS"), "{body}");
    assert!(
        page["reactor"]["missing"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{body}"
    );
    if !server.version().at_least(2, 12) {
        assert!(missing.contains("2.12"), "{body}");
        stop.cancel();
        return;
    }

    let client = async_nats::connect(&url).await.unwrap();
    let timers = aether_reactions::JetStreamTimers::open(
        async_nats::jetstream::new(client),
        aether_reactions::TimersConfig {
            storage: aether_core::StorageKind::Memory,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let markup = "<img src=x onerror=\"window.pwned=1\">";
    for (i, id) in [markup, "h-1", "h-2"].into_iter().enumerate() {
        let record = aether_core::TimerRecord {
            name: "expire".into(),
            due: chrono::Utc::now() + chrono::Duration::minutes(10 + i as i64),
            command: serde_json::json!("Expire"),
        };
        timers
            .set(aether_core::ActorKey::new("hold", id), &record)
            .await
            .unwrap();
    }

    // Asking for more than the bound gets the bound; the earliest first, as JSON strings.
    let (status, _, body) = get(addr, "/api/timers?limit=100000", &[]).await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["limit"], aether_cli::ui::MAX_TIMERS_PAGE, "{body}");
    assert_eq!(page["missing"], serde_json::Value::Null, "{body}");
    assert_eq!(page["total"], 3, "{body}");
    assert_eq!(page["next"][0]["actorId"], markup, "{body}");
    assert!(
        page["next"][0]["dueInSecs"]
            .as_f64()
            .is_some_and(|s| s > 500.0),
        "{body}"
    );

    let (_, _, body) = get(addr, "/api/timers?actorType=hold&actor=h-2&limit=1", &[]).await;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], 1, "{body}");
    assert_eq!(page["next"][0]["actorId"], "h-2", "{body}");

    for bad in ["/api/timers?actorType=a.b", "/api/timers?limit=many"] {
        let (status, _, body) = get(addr, bad, &[]).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }
    stop.cancel();
}
