//! Key-value buckets on a real server: reads tell absent, deleted and values apart; of two
//! writers from one revision exactly one wins; creates, deletes and watches; and refusals are
//! permission errors at once, not timeouts.

use std::time::Duration;

use aether_core::Error;
use aether_core::StorageKind;
use aether_nats::{CasOutcome, Connection, KvBucket, Versioned};
use aether_testkit::NatsServer;
use futures::stream::{BoxStream, StreamExt};
use tokio::time::Instant;

/// Well below the JetStream context's request timeout (5 s): a refusal must not wait for it.
const PROMPT: Duration = Duration::from_millis(2500);
const WAIT: Duration = Duration::from_secs(10);

async fn connect(server: &NatsServer) -> Connection {
    Connection::connect(&server.url(), async_nats::ConnectOptions::new())
        .await
        .expect("connect")
}

async fn login(server: &NatsServer, user: &str) -> Connection {
    Connection::connect(
        &server.url(),
        async_nats::ConnectOptions::with_user_and_password(user.into(), user.into()),
    )
    .await
    .expect("log in")
}

async fn bucket(conn: &Connection, name: &str) -> KvBucket {
    KvBucket::open(conn, name, "a test bucket", StorageKind::Memory)
        .await
        .expect("bucket")
}

#[tokio::test]
async fn reads_writes_and_conflicts() {
    let server = NatsServer::start().expect("nats-server");
    let (a, b) = (connect(&server).await, connect(&server).await);
    let (a, b) = (bucket(&a, "CAS").await, bucket(&b, "CAS").await);
    assert_eq!(a.name(), "CAS");

    assert_eq!(a.read("leader").await.unwrap(), Versioned::Absent);
    // Two writers expecting "absent": exactly one wins.
    let (wa, wb) = tokio::join!(
        a.compare_and_set("leader", "a".into(), 0),
        b.compare_and_set("leader", "b".into(), 0)
    );
    let outcomes = [wa.unwrap(), wb.unwrap()];
    let won: Vec<u64> = outcomes.iter().filter_map(|o| o.written()).collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    assert!(outcomes.contains(&CasOutcome::Conflict { current: None }));
    let read = b.read("leader").await.unwrap();
    assert_eq!(read.revision(), won[0]);
    let holder = read.value().cloned().unwrap();

    // A write at the current revision goes through; at the old one it conflicts.
    let CasOutcome::Written(second) = a
        .compare_and_set("leader", holder.clone(), won[0])
        .await
        .unwrap()
    else {
        panic!("a write at the current revision conflicted")
    };
    assert!(second > won[0]);
    assert_eq!(
        b.compare_and_set("leader", "late".into(), won[0])
            .await
            .unwrap(),
        CasOutcome::Conflict { current: None }
    );

    // Create only where there is no value; the conflict names the value's revision.
    assert_eq!(
        a.create("leader", "x".into()).await.unwrap(),
        CasOutcome::Conflict {
            current: Some(second)
        }
    );
    let created = a.create("count", "4".into()).await.unwrap();
    assert!(matches!(created, CasOutcome::Written(_)), "{created:?}");

    // A delete at a stale revision does nothing; at the current one it leaves a marker that
    // reads as deleted, with its own revision, which a compare-and-set can expect.
    assert_eq!(
        a.delete("leader", Some(won[0])).await.unwrap(),
        CasOutcome::Conflict { current: None }
    );
    assert_eq!(b.read("leader").await.unwrap().value(), Some(&holder));
    let CasOutcome::Written(deleted) = a.delete("leader", Some(second)).await.unwrap() else {
        panic!("a delete at the current revision conflicted")
    };
    assert_eq!(
        b.read("leader").await.unwrap(),
        Versioned::Deleted { revision: deleted }
    );
    // Create works over a delete.
    let again = b.create("leader", "b".into()).await.unwrap();
    assert!(
        matches!(again, CasOutcome::Written(r) if r > deleted),
        "{again:?}"
    );
    // An unconditional put and an unconditional delete.
    let put = a.put("replay.p", "1".into()).await.unwrap();
    assert_eq!(
        a.read("replay.p").await.unwrap(),
        Versioned::Value {
            value: "1".into(),
            revision: put
        }
    );
    assert!(matches!(
        a.delete("replay.p", None).await.unwrap(),
        CasOutcome::Written(_)
    ));

    // Keys that hold a value, by prefix.
    a.put("worker.p.w1", "".into()).await.unwrap();
    a.put("worker.p.w2", "".into()).await.unwrap();
    a.put("worker.q.w1", "".into()).await.unwrap();
    let mut keys = b.keys("worker.p.").await.unwrap();
    keys.sort();
    assert_eq!(keys, ["worker.p.w1", "worker.p.w2"]);
    let all = b.keys("").await.unwrap();
    assert!(all.contains(&"leader".to_string()) && !all.contains(&"replay.p".to_string()));

    // Keys a bucket cannot hold are refused before anything is sent.
    for bad in ["", "a b", ".x", "x."] {
        assert!(matches!(
            a.put(bad, "v".into()).await,
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(a.read(bad).await, Err(Error::InvalidInput(_))));
    }
}

#[tokio::test]
async fn a_watch_shows_the_value_then_every_change() {
    let server = NatsServer::start().expect("nats-server");
    let conn = connect(&server).await;
    let kv = bucket(&conn, "WATCHED").await;
    let first = kv.put("table", "1".into()).await.unwrap();
    let mut watch = kv.watch("table").await.unwrap();
    assert_eq!(
        next(&mut watch).await.unwrap(),
        Versioned::Value {
            value: "1".into(),
            revision: first
        }
    );
    let CasOutcome::Written(second) = kv
        .compare_and_set("table", "2".into(), first)
        .await
        .unwrap()
    else {
        panic!("conflict")
    };
    assert_eq!(next(&mut watch).await.unwrap().revision(), second);
    let CasOutcome::Written(gone) = kv.delete("table", None).await.unwrap() else {
        panic!("conflict")
    };
    assert_eq!(
        next(&mut watch).await.unwrap(),
        Versioned::Deleted { revision: gone }
    );
}

#[tokio::test]
async fn refused_writes_and_reads_are_permission_errors_at_once() {
    let server = NatsServer::builder()
        .extra_config(
            r#"
authorization {
  users = [
    { user: admin, password: admin }
    # May read the bucket but not write it.
    { user: reader, password: reader, permissions: {
        publish: { deny: ["$KV.LOCKED.>"] }
    } }
    # May write the bucket but not read it.
    { user: writer, password: writer, permissions: {
        publish: { deny: ["$JS.API.DIRECT.GET.KV_LOCKED.>"] }
    } }
  ]
}
"#,
        )
        .start()
        .expect("nats-server");
    let admin = bucket(&login(&server, "admin").await, "LOCKED").await;
    let revision = admin.put("leader", "admin".into()).await.unwrap();

    let reader = bucket(&login(&server, "reader").await, "LOCKED").await;
    assert_eq!(reader.read("leader").await.unwrap().revision(), revision);
    let started = Instant::now();
    let err = reader
        .compare_and_set("leader", "reader".into(), revision)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(started.elapsed() < PROMPT, "waited {:?}", started.elapsed());
    let text = chain(&err);
    assert!(text.contains("\"$KV.LOCKED.leader\""), "{text}");
    assert!(text.contains("leader"), "{text}");
    let err = reader.create("other", "x".into()).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let err = reader.delete("leader", None).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");

    let writer = bucket(&login(&server, "writer").await, "LOCKED").await;
    let started = Instant::now();
    let err = writer.read("leader").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(started.elapsed() < PROMPT, "waited {:?}", started.elapsed());
    assert!(
        chain(&err).contains("$JS.API.DIRECT.GET.KV_LOCKED"),
        "{err}"
    );
    // Its writes go through.
    writer.put("leader", "writer".into()).await.unwrap();
    assert_eq!(
        admin.read("leader").await.unwrap().value().map(|v| &v[..]),
        Some(&b"writer"[..])
    );
}

async fn next(
    watch: &mut BoxStream<'static, aether_core::Result<Versioned>>,
) -> aether_core::Result<Versioned> {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("the watch moved")
        .expect("the watch goes on")
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
