//! The testkit proves itself against real servers.

use std::time::Duration;

use aether_testkit::{NatsCluster, NatsServer, TestkitError};
use futures::StreamExt;

#[tokio::test]
async fn starts_connects_publishes_and_subscribes() {
    let server = NatsServer::start().expect("start nats-server");
    assert!(server.url().starts_with("nats://127.0.0.1:"));
    assert_ne!(server.port(), 4222, "tests must not use the default port");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut sub = client.subscribe("t.x").await.unwrap();
    client.flush().await.unwrap();
    client.publish("t.x", "hello".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("message in time")
        .expect("message");
    assert_eq!(&msg.payload[..], b"hello");
}

#[tokio::test]
async fn two_servers_never_share_port_or_store() {
    let a = NatsServer::start().unwrap();
    let b = NatsServer::start().unwrap();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
}

#[tokio::test]
async fn restart_keeps_port_and_jetstream_data() {
    let mut server = NatsServer::start().unwrap();
    let port = server.port();
    {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KEEP".into(),
            subjects: vec!["keep.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        js.publish("keep.a", "v1".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    server.restart().unwrap();
    assert_eq!(server.port(), port);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("KEEP").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    let msg = stream
        .get_last_raw_message_by_subject("keep.a")
        .await
        .unwrap();
    assert_eq!(&msg.payload[..], b"v1");
}

#[tokio::test]
async fn kill_then_start_again_keeps_acked_data() {
    let mut server = NatsServer::start().unwrap();
    {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "K".into(),
            subjects: vec!["k".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        for i in 0..10 {
            js.publish("k", format!("{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    server.kill().unwrap();
    assert!(!server.is_running());
    server.start_again().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("K").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 10);
}

#[tokio::test]
async fn authentication_is_enforced() {
    let server = NatsServer::builder()
        .user_password("alice", "s3cret")
        .start()
        .unwrap();
    assert!(
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "s3cret".into())
            .connect(server.url())
            .await
            .is_ok()
    );
    let wrong = async_nats::ConnectOptions::with_user_and_password("alice".into(), "nope".into())
        .retry_on_initial_connect()
        .max_reconnects(1)
        .connect(server.url());
    // Either the connect fails or the first request does; it must not succeed.
    if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(3), wrong).await {
        assert!(c.flush().await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_elects_a_leader_and_replicates() {
    let mut cluster = NatsCluster::start(3).expect("cluster");
    assert_eq!(cluster.len(), 3);
    let client = async_nats::ConnectOptions::new()
        .connect(cluster.url_list())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    // Stream creation can race the first meta-leader election; retry briefly.
    let mut created = false;
    for _ in 0..50 {
        if js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "R3".into(),
                subjects: vec!["r3.>".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .is_ok()
        {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(created, "could not create an R3 stream");
    js.publish("r3.a", "x".into()).await.unwrap().await.unwrap();
    cluster.server(2).pause().unwrap();
    cluster.server(2).resume().unwrap();
    cluster.server(1).kill().unwrap();
    cluster.server(1).start_again().unwrap();
}

#[test]
fn monitoring_endpoints_answer_json_when_enabled() {
    let mut server = NatsServer::builder().monitoring(true).start().unwrap();
    let port = server.monitor_port().expect("a monitoring port");
    assert_ne!(port, server.port());
    let varz = server.monitor("varz").unwrap();
    assert_eq!(varz["port"], server.port());
    let id = server.server_id().unwrap();
    assert!(!id.is_empty());
    // The monitoring port survives a restart; the server id does not.
    server.restart().unwrap();
    assert_eq!(server.monitor_port(), Some(port));
    assert_ne!(server.server_id().unwrap(), id);

    let plain = NatsServer::start().unwrap();
    assert_eq!(plain.monitor_port(), None);
    assert!(matches!(
        plain.monitor("varz"),
        Err(TestkitError::Monitoring { .. })
    ));
}
