//! Connecting to real servers: the error names its cause, a TLS URL to a plain-text server says
//! so, and credentials written into the URL are used and never shown.

use std::time::Duration;

use aether_core::Error;
use aether_nats::Connection;
use aether_testkit::NatsServer;
use async_nats::ConnectOptions;

fn quick() -> ConnectOptions {
    ConnectOptions::new().connection_timeout(Duration::from_secs(3))
}

#[tokio::test]
async fn a_closed_port_says_connection_refused() {
    let port = aether_testkit::free_port().unwrap();
    let e = Connection::connect(&format!("nats://127.0.0.1:{port}"), quick())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    // Printed alone, without its source chain, the error still says why.
    let text = e.to_string().to_lowercase();
    assert!(text.contains("connection refused"), "{text}");
}

#[tokio::test]
async fn a_malformed_url_is_invalid_input_not_retried() {
    let e = Connection::connect("localhost:x", quick())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn tls_to_a_plain_text_server_says_the_server_does_not_speak_tls() {
    let server = NatsServer::start().unwrap();
    let url = format!("tls://127.0.0.1:{}", server.port());
    let e = Connection::connect(&url, quick()).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("does not speak TLS"), "{text}");
    assert!(!text.contains("is the server running"), "{text}");
}

#[tokio::test]
async fn credentials_in_the_url_are_used_and_never_shown() {
    let server = NatsServer::builder()
        .user_password("ada", "s3cret")
        .start()
        .unwrap();
    let port = server.port();
    let conn = Connection::connect(&format!("nats://ada:s3cret@127.0.0.1:{port}"), quick())
        .await
        .unwrap();
    conn.round_trip(Duration::from_secs(5)).await.unwrap();

    let e = Connection::connect(&format!("nats://ada:wrong@127.0.0.1:{port}"), quick())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    let all = format!("{e} {e:?}");
    assert!(!all.contains("wrong"), "{all}");
    assert!(all.contains("nats://ada:***@127.0.0.1"), "{all}");

    let server = NatsServer::builder().token("t0k3n").start().unwrap();
    let conn = Connection::connect(
        &format!("nats://t0k3n@127.0.0.1:{}", server.port()),
        quick(),
    )
    .await
    .unwrap();
    conn.round_trip(Duration::from_secs(5)).await.unwrap();
}
