//! A real server that denies subjects: its asynchronous reports reach the watch, by subject.

use std::time::Duration;

use aether_nats::{ConnectionMonitor, Operation};
use aether_testkit::NatsServer;
use tokio::time::Instant;

#[tokio::test]
async fn denied_publish_and_subscription_are_recorded_by_subject() {
    let server = NatsServer::builder()
        .extra_config(
            r#"
authorization {
  users = [
    { user: limited, password: limited, permissions: {
        publish: { deny: ["secret.>"] }
        subscribe: { deny: ["secret.>"] }
    } }
  ]
}
"#,
        )
        .start()
        .unwrap();
    let monitor = ConnectionMonitor::new();
    let watch = monitor.permissions().clone();
    let client = monitor
        .install(async_nats::ConnectOptions::with_user_and_password(
            "limited".into(),
            "limited".into(),
        ))
        .connect(server.url())
        .await
        .unwrap();

    client.publish("open.a", "fine".into()).await.unwrap();
    client.publish("secret.a", "no".into()).await.unwrap();
    let _sub = client.subscribe("secret.>").await.unwrap();
    aether_nats::backend::round_trip(&client, Duration::from_secs(5), "test")
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    while watch.violations() < 2 {
        assert!(Instant::now() < deadline, "no violation reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(watch.denied(Operation::Publish, "secret.a").is_some());
    assert!(watch.denied(Operation::Subscribe, "secret.>").is_some());
    assert!(watch.denied(Operation::Publish, "open.a").is_none());
    assert_eq!(watch.violations(), 2);

    // A request to a denied subject gets no answer: the watch is how to tell why.
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_millis(500),
        client.request("secret.b", "q".into()),
    )
    .await;
    assert!(matches!(err, Err(_) | Ok(Err(_))));
    let v = watch
        .find_since(started, |op, s| op == Operation::Publish && s == "secret.b")
        .expect("the refused request is reported");
    assert_eq!(v.subject, "secret.b");
}
