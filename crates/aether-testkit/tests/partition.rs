//! Partitions through proxies, proved on real servers: every route goes through a proxy, a cut
//! removes the routes it should and no others, gossip cannot route around a cut, a heal brings
//! the routes back, and a client behind a cut proxy loses its server until the heal.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aether_testkit::{
    find_debian_nats_server, find_nats_server, NatsCluster, NatsServer, INSTALL_HINT,
};
use futures::StreamExt;

/// Long enough for a loaded two-core machine; the steps usually take well under a second.
const DEADLINE: Duration = Duration::from_secs(30);

/// The default binary, plus Debian's (an older 2.9) when it is installed and different, so
/// the partition machinery is proved on both route implementations. Found the way
/// `scripts/test` finds it; under CI, where the script requires both, a missing one fails.
fn binaries() -> Vec<PathBuf> {
    let main = find_nats_server().expect("nats-server");
    let mut all = vec![main.clone()];
    let same = |a: &PathBuf, b: &PathBuf| a.canonicalize().ok() == b.canonicalize().ok();
    match find_debian_nats_server() {
        Some(debian) if !same(&main, &debian) => all.push(debian),
        Some(_) => {}
        None => assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs Debian's nats-server 2.9 for the partition proofs: {INSTALL_HINT}"
        ),
    }
    all
}

/// Polls `condition` until it holds; panics with `what` after [`DEADLINE`].
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Route connections as the servers count them (each connection once per end), against the
/// connections the route proxies are forwarding.
fn route_connections(cluster: &NatsCluster) -> (u64, u64) {
    let mut at_servers = 0;
    let mut through_proxies = 0;
    for i in 0..cluster.len() {
        if let Ok(routez) = cluster.servers()[i].monitor("routez") {
            at_servers += routez["num_routes"].as_u64().unwrap_or(0);
        }
        for j in (0..cluster.len()).filter(|j| *j != i) {
            through_proxies += cluster.route_proxy(i, j).open_connections() as u64;
        }
    }
    (at_servers, through_proxies)
}

#[test]
fn isolate_cuts_every_route_of_a_server_and_heal_restores_them() {
    for binary in binaries() {
        let started = Instant::now();
        let cluster =
            NatsCluster::start_partitionable(3, NatsServer::builder().binary(&binary)).unwrap();
        let version = cluster.servers()[0].version();
        cluster.wait_for_full_mesh().unwrap();

        // Every route connection the servers have is one the proxies forward: none bypasses
        // them. (Both ends count a connection; duplicate connections between two servers
        // come and go while the routes settle, so wait for the counts to agree.)
        wait_until("every route connection goes through a proxy", || {
            let (at_servers, through_proxies) = route_connections(&cluster);
            at_servers > 0 && at_servers == 2 * through_proxies
        });

        cluster.isolate(0);
        cluster.wait_for_route_peers(0, &[]).unwrap();
        cluster.wait_for_route_peers(1, &[2]).unwrap();
        cluster.wait_for_route_peers(2, &[1]).unwrap();
        let routez = cluster.servers()[0].monitor("routez").unwrap();
        assert_eq!(routez["num_routes"], 0, "{routez}");
        // The isolated server keeps dialing, and every dial is dropped by its proxies.
        let dropped = || {
            (1..3)
                .map(|j| cluster.route_proxy(0, j).dropped_connections())
                .sum::<u64>()
        };
        let before = dropped();
        wait_until("the isolated server dials again", || dropped() > before);
        assert_eq!(cluster.route_peers(0).unwrap(), Vec::<usize>::new());

        cluster.heal();
        cluster.wait_for_full_mesh().unwrap();
        wait_until("every route connection goes through a proxy again", || {
            let (at_servers, through_proxies) = route_connections(&cluster);
            at_servers > 0 && at_servers == 2 * through_proxies
        });
        println!(
            "nats-server {version}: isolate and heal in {:?}",
            started.elapsed()
        );
    }
}

/// `split(&[0], &[1])` leaves server 2 routed to both. When 2 re-forms its route to 1 it tells
/// 0 about 1 (route gossip), and 0, having no route to 1, dials the address 1 advertises.
/// Without the advertised address leading nowhere, that dial would reach 1 directly and heal
/// the partition behind the test's back.
#[test]
fn gossip_cannot_route_around_a_cut() {
    let cluster = NatsCluster::start_partitionable(3, NatsServer::builder()).unwrap();
    cluster.wait_for_full_mesh().unwrap();

    cluster.split(&[0], &[1]);
    cluster.wait_for_route_peers(0, &[2]).unwrap();
    cluster.wait_for_route_peers(1, &[2]).unwrap();
    // From now on, servers 0 and 1 must never be routed to each other.
    let peers = || {
        let peers: Vec<Vec<usize>> = (0..3).map(|i| cluster.route_peers(i).unwrap()).collect();
        assert!(
            !peers[0].contains(&1) && !peers[1].contains(&0),
            "servers 0 and 1 found a route around the cut: routes {peers:?}"
        );
        peers
    };
    let settle = |expected: [&[usize]; 3]| {
        wait_until(&format!("routes are {expected:?}"), || peers() == expected)
    };
    settle([&[2], &[2], &[0, 1]]);

    // Re-form the route between 1 and 2 only.
    for (a, b) in [(1, 2), (2, 1)] {
        cluster.route_proxy(a, b).cut();
    }
    settle([&[2], &[], &[0]]);
    for (a, b) in [(1, 2), (2, 1)] {
        cluster.route_proxy(a, b).heal();
    }
    settle([&[2], &[2], &[0, 1]]);

    // Server 0 or 1 heard of the other through 2 and dialed its advertised address, in vain.
    let gossip_dial = |i: usize| {
        cluster.servers()[i]
            .log()
            .lines()
            .any(|l| l.contains("Error trying to connect to route") && l.contains("127.0.0.254"))
    };
    wait_until("server 0 or 1 dials a gossiped route", || {
        peers();
        gossip_dial(0) || gossip_dial(1)
    });
    // The failed dial is not retried (implicit routes are not): the cut holds.
    assert_eq!(peers(), [vec![2], vec![2], vec![0, 1]]);

    cluster.heal();
    cluster.wait_for_full_mesh().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_a_cut_proxy_loses_its_server_until_healed() {
    let cluster = NatsCluster::start_partitionable(3, NatsServer::builder()).unwrap();
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                let _ = events_tx.send(event);
            }
        })
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(cluster.client_url(1))
        .await
        .unwrap();
    // Servers do not tell clients each other's direct addresses: a reconnect can only go
    // through the proxy.
    assert!(
        client.server_info().connect_urls.is_empty(),
        "{:?}",
        client.server_info().connect_urls
    );
    let mut sub = client.subscribe("t").await.unwrap();
    client.publish("t", "one".into()).await.unwrap();
    let msg = tokio::time::timeout(DEADLINE, sub.next()).await.unwrap();
    assert_eq!(msg.unwrap().payload, "one");

    cluster.cut_client(1);
    wait_for_event(&mut events, |e| {
        matches!(e, async_nats::Event::Disconnected)
    })
    .await;
    // While cut, the client cannot get through.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), client.flush())
            .await
            .map_or(true, |r| r.is_err()),
        "a flush went through a cut proxy"
    );
    // It keeps redialing its only address, the proxy, which drops every attempt.
    let proxy = cluster.client_proxy(1);
    let deadline = Instant::now() + DEADLINE;
    while proxy.dropped_connections() == 0 {
        assert!(Instant::now() < deadline, "the client never redialed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cluster.heal_client(1);
    wait_for_event(&mut events, |e| matches!(e, async_nats::Event::Connected)).await;
    client.publish("t", "two".into()).await.unwrap();
    let msg = tokio::time::timeout(DEADLINE, sub.next()).await.unwrap();
    assert_eq!(msg.unwrap().payload, "two");
}

async fn wait_for_event(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>,
    wanted: impl Fn(&async_nats::Event) -> bool,
) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the connection event in time")
            .expect("the client is alive");
        if wanted(&event) {
            return;
        }
    }
}

/// An R3 stream needs two of its three servers: a client of an isolated server gets no
/// acknowledgement until the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_server_cannot_commit_to_a_replicated_stream() {
    use async_nats::jetstream;

    let cluster = NatsCluster::start_partitionable(3, NatsServer::builder()).unwrap();
    let client = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(cluster.client_url(0))
        .await
        .unwrap();
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(2));
    let deadline = Instant::now() + DEADLINE;
    // The first stream creation can race the meta leader's first moments; retry.
    while let Err(e) = js
        .get_or_create_stream(jetstream::stream::Config {
            name: "R3".into(),
            subjects: vec!["r3.>".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
    {
        assert!(Instant::now() < deadline, "no R3 stream: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let publish = |payload: &'static str| {
        let js = js.clone();
        async move {
            match js.publish("r3.a", payload.into()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    let until_acked = |payload: &'static str| async move {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match publish(payload).await {
                Ok(()) => return,
                Err(e) => assert!(Instant::now() < deadline, "{payload} not acknowledged: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    until_acked("before").await;

    cluster.isolate(0);
    cluster.wait_for_route_peers(0, &[]).unwrap();
    let cut = publish("during").await;
    assert!(cut.is_err(), "an isolated server acknowledged an R3 write");

    cluster.heal();
    cluster.wait_for_full_mesh().unwrap();
    until_acked("after").await;
}
