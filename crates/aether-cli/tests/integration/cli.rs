//! The `aether` binary without a server: help, usage errors, the in-process demo, and
//! connection failures.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use assert_cmd::Command;

fn aether() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aether"));
    cmd.env_remove("NATS_URL")
        .env_remove("NATS_TOKEN")
        .env_remove("NATS_PASSWORD")
        .env("NO_COLOR", "1")
        .timeout(Duration::from_secs(60));
    cmd
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failure must be exactly one line starting with `error:`.
fn assert_one_line_error(out: &std::process::Output, contains: &str) {
    assert!(!out.status.success(), "expected failure: {out:?}");
    let err = stderr_of(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got {err:?}");
    assert!(lines[0].starts_with("error: "), "{err:?}");
    assert!(
        lines[0].contains(contains),
        "{err:?} should contain {contains:?}"
    );
}

#[test]
fn every_command_s_definition_is_sound() {
    // Clap's own checks over every subcommand (clashing flag names, say), which otherwise
    // only fail when that subcommand is first run.
    use clap::CommandFactory;
    aether_cli::Cli::command().debug_assert();
}

#[test]
fn help_for_every_subcommand() {
    for args in [
        vec!["--help"],
        vec!["demo", "--help"],
        vec!["events", "--help"],
        vec!["tail", "--help"],
        vec!["stats", "--help"],
        vec!["cluster", "--help"],
        vec!["cluster", "members", "--help"],
        vec!["cluster", "shards", "--help"],
        vec!["projections", "--help"],
        vec!["projections", "replay-parked", "--help"],
        vec!["timers", "--help"],
        vec!["ui", "--help"],
        vec!["leaders", "--help"],
        vec!["backup", "--help"],
        vec!["restore", "--help"],
        vec!["mirror", "create", "--help"],
        vec!["mirror", "status", "--help"],
        vec!["mirror", "promote", "--help"],
        vec!["actors", "retire", "--help"],
        vec!["history", "--help"],
        vec!["history", "compact", "--help"],
        vec!["history", "remove-retired", "--help"],
    ] {
        let out = aether().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let out = aether().args(["events", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--from",
        "--namespace",
        "--json",
        "--nats",
        "--creds",
        "--user",
        "--password",
        "--token",
        "--tls-ca",
    ] {
        assert!(text.contains(flag), "events --help lacks {flag}: {text}");
    }
}

#[test]
fn bad_flags_fail_with_one_line() {
    let out = aether().args(["demo", "--bogus"]).output().unwrap();
    assert_one_line_error(&out, "--bogus");
    assert_eq!(out.status.code(), Some(2));
    let out = aether()
        .args(["demo", "--actors", "lots"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "lots");
    let out = aether().args(["events"]).output().unwrap();
    assert_one_line_error(&out, "ACTOR");
    let out = aether().args(["frobnicate"]).output().unwrap();
    assert_one_line_error(&out, "frobnicate");
    let out = aether().args(["stats", "--user", "ada"]).output().unwrap();
    assert_one_line_error(&out, "--password");
}

#[test]
fn demo_in_process_prints_the_summary() {
    let out = aether().args(["demo", "--actors", "30"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("in process"), "{text}");
    for line in [
        "Summary",
        "accounts:",
        "events written:",
        "conflicts retried:",
        "accounts per node before:",
        "accounts per node after:",
        "time taken:",
    ] {
        assert!(text.contains(line), "missing {line:?} in {text}");
    }
    check_events_and_transfers(&text);
    let verified = text
        .lines()
        .find(|l| l.starts_with("balances verified:"))
        .unwrap();
    let parts: Vec<&str> = verified.split_whitespace().collect();
    assert_eq!(parts[2], parts[4], "{verified}");
    assert!(!text.contains('\u{1b}'), "no colours when not a terminal");
}

/// Checks the summary's event count: 30 accounts (open + 3 commands each), 3 writers x 20
/// ledger credits, and two events per committed transfer; and that transfers conserved the
/// total (or were not supported by the server).
pub(crate) fn check_events_and_transfers(text: &str) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("missing {name:?} in {text}"))
            .to_string()
    };
    let events: u64 = field("events written:").parse().unwrap();
    let transfers = field("transfers:");
    if transfers.starts_with("none") {
        assert_eq!(events, 180, "{text}");
        return;
    }
    let committed: u64 = transfers
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(committed > 0, "{text}");
    assert_eq!(events, 180 + 2 * committed, "{text}");
    let (before, after) = transfers
        .rsplit_once("total ")
        .and_then(|(_, t)| t.split_once(" → "))
        .unwrap();
    assert_eq!(before, after, "the total must be conserved: {text}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn server_down_is_a_quick_one_line_error() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    for args in [
        vec!["events", "acc-1", "--nats", &url],
        vec!["stats", "--nats", &url],
        vec!["tail", "orders", "--nats", &url],
        vec!["cluster", "members", "--nats", &url],
        vec!["cluster", "shards", "--nats", &url],
        vec!["demo", "--actors", "3", "--nats", &url],
        vec!["ui", "--nats", &url, "--listen", "127.0.0.1:0"],
    ] {
        let started = Instant::now();
        let out = aether().args(&args).output().unwrap();
        assert_one_line_error(&out, "cannot connect to NATS");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    // NATS_URL is honoured like --nats.
    let out = aether()
        .args(["stats"])
        .env("NATS_URL", &url)
        .output()
        .unwrap();
    assert_one_line_error(&out, &url);
}

#[test]
fn bad_urls_are_one_line_errors() {
    let out = aether()
        .args(["events", "a", "--nats", "http://example.invalid:4222"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "invalid NATS URL");
    let out = aether()
        .args(["stats", "--nats", "nats://bad host:1"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "invalid NATS URL");
    let out = aether()
        .args(["stats", "--creds", "/nonexistent/user.creds"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "credentials file");
}

#[test]
fn a_closed_port_says_connection_refused() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let out = aether().args(["stats", "--nats", &url]).output().unwrap();
    assert_one_line_error(&out, "Connection refused");
}

#[test]
fn passwords_and_tokens_in_the_url_are_never_printed() {
    let port = free_port();
    for url in [
        format!("nats://ada:s3cret@127.0.0.1:{port}"),
        format!("nats://s3cret@127.0.0.1:{port}"),
        "nats://ada:s3cret@localhost:x".to_string(),
    ] {
        let out = aether().args(["stats", "--nats", &url]).output().unwrap();
        assert_one_line_error(&out, "***@");
        assert!(!stderr_of(&out).contains("s3cret"), "{}", stderr_of(&out));
        // NATS_URL too.
        let out = aether()
            .args(["tail", ">"])
            .env("NATS_URL", &url)
            .output()
            .unwrap();
        assert_one_line_error(&out, "***@");
        assert!(!stderr_of(&out).contains("s3cret"), "{}", stderr_of(&out));
    }
    // Credentials in the URL and in a flag: refused, rather than one set silently ignored.
    let out = aether()
        .args([
            "stats",
            "--token",
            "other",
            "--nats",
            &format!("nats://ada:s3cret@127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, "give them once");
    assert!(!stderr_of(&out).contains("s3cret"));
}
