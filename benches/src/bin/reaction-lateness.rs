//! How late durable timers fire, in a steady-state run on a real nats-server (2.12+): an
//! embedded actor host on the JetStream store, with a reactor (its log reader and its timer
//! dispatcher) in the same process, as one node runs them.
//!
//! Each round arms 1 000 actors with one timer each, due 2 to 4 s ahead and spread evenly
//! over those two seconds; each timer's command decides an event, and the actor records, in
//! its decision, how late it is: the time of the decision minus the due time. The round ends
//! once all 1 000 are decided. Then the fired messages are read back from the timers stream:
//! the time the server stored each one, minus its due time, is the server's share of the
//! lateness (its schedule firing); the rest is delivery (the dispatcher's consumer, the
//! command through the host, the decision).
//!
//! A raw probe gives the floor: the same 1 000 due times per round as `@at` message schedules
//! published straight into a stream, no actor and no reactor, and the stored time of each
//! fired message minus its due time.
//!
//! The rounds (each scenario after one untimed round) run first with only those 1 000 timers
//! pending, then again with 99 000 more pending (1 980 other actors with 50 timers each, due
//! one to two hours ahead, so that none fires during the run): 100 000 pending in all. The raw
//! probe runs last, with the reactor stopped.
//!
//! Usage: `reaction-lateness [--rounds N] [--json path]` (5 rounds by default). The JSON is
//! what `bench-report` reads for the lateness rows (`target/reaction-lateness.json` beside the
//! criterion directory).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_actor::{Actor, ActorClient, ActorHost, DomainEvent, RuntimeConfig, Timer};
use aether_benches::setup::{fail, OrFail};
use aether_core::EventLog;
use aether_projection::InMemoryProjectionStore;
use aether_reactions::{Reactor, ReactorConfig, Targets, TimersConfig};
use aether_store::{JetStreamConfig, JetStreamEventStore};
use aether_testkit::NatsServer;
use async_nats::jetstream::consumer::pull;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Timers measured per round, one per actor.
const MEASURED: usize = 1_000;
/// Background timers per background actor (the limit per actor is 64).
const PER_BACKGROUND_ACTOR: usize = 50;
/// Background actors: with the measured timers, 100 000 pending.
const BACKGROUND_ACTORS: usize = 1_980;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Alarm {
    dues: Vec<Option<DateTime<Utc>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum AlarmCommand {
    Arm { dues: Vec<DateTime<Utc>> },
    Fire { index: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AlarmEvent {
    Armed { dues: Vec<DateTime<Utc>> },
    Fired { index: usize, at: DateTime<Utc> },
}

impl DomainEvent for AlarmEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Armed { .. } => "Armed",
            Self::Fired { .. } => "Fired",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("not armed")]
struct NotArmed;

/// Each fired timer's lateness in ms (decision time minus due time), as decided.
type Sink = Arc<Mutex<Vec<f64>>>;

struct Alarms(Sink);

impl Actor for Alarms {
    type State = Alarm;
    type Command = AlarmCommand;
    type Event = AlarmEvent;
    type Reply = ();
    type Error = NotArmed;
    const TYPE: &'static str = "alarm";

    async fn decide(
        &self,
        _: &str,
        s: &Alarm,
        c: &AlarmCommand,
    ) -> Result<Vec<AlarmEvent>, NotArmed> {
        match c {
            AlarmCommand::Arm { dues } => Ok(vec![AlarmEvent::Armed { dues: dues.clone() }]),
            AlarmCommand::Fire { index } => {
                let due = s.dues.get(*index).copied().flatten().ok_or(NotArmed)?;
                let at = Utc::now();
                let late = (at - due).num_microseconds().unwrap_or(i64::MAX) as f64 / 1_000.0;
                self.0.lock().unwrap_or_else(|e| e.into_inner()).push(late);
                Ok(vec![AlarmEvent::Fired { index: *index, at }])
            }
        }
    }

    fn apply(s: &mut Alarm, e: &AlarmEvent) {
        match e {
            AlarmEvent::Armed { dues } => s.dues = dues.iter().copied().map(Some).collect(),
            AlarmEvent::Fired { index, .. } => {
                if let Some(d) = s.dues.get_mut(*index) {
                    *d = None;
                }
            }
        }
    }

    fn reply(_: &Alarm, _: &AlarmCommand, _: &[AlarmEvent]) {}

    fn timers(_: &str, s: &Alarm) -> Vec<Timer<AlarmCommand>> {
        s.dues
            .iter()
            .enumerate()
            .filter_map(|(index, due)| {
                due.map(|at| Timer::at(format!("t{index}"), at, AlarmCommand::Fire { index }))
            })
            .collect()
    }
}

/// The `q` quantile (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn ms_after_millis(due: DateTime<Utc>, plus_ms: i64) -> DateTime<Utc> {
    let t = due + chrono::Duration::milliseconds(plus_ms);
    DateTime::from_timestamp_millis(t.timestamp_millis()).or_fail("due time")
}

/// One round's figures.
struct Round {
    decided: Vec<f64>,
    stored: Vec<f64>,
    arm_ms: f64,
}

struct Run {
    host: ActorHost<Alarms>,
    sink: Sink,
    js: async_nats::jetstream::Context,
}

impl Run {
    async fn round(&self) -> Round {
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let t0 = ms_after_millis(Utc::now(), 0);
        let started = Instant::now();
        // Due 2 s to 4 s ahead, 2 ms apart.
        let spread = 2_000 / MEASURED as i64;
        futures::stream::iter(0..MEASURED)
            .for_each_concurrent(32, |a| async move {
                let due = ms_after_millis(t0, 2_000 + a as i64 * spread);
                self.host
                    .send(&format!("m-{a}"), AlarmCommand::Arm { dues: vec![due] })
                    .await
                    .or_fail("arming");
            })
            .await;
        let arm_ms = started.elapsed().as_secs_f64() * 1_000.0;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let n = self.sink.lock().unwrap_or_else(|e| e.into_inner()).len();
            if n >= MEASURED {
                break;
            }
            if Instant::now() > deadline {
                fail(format!(
                    "only {n} of {MEASURED} timers fired within two minutes"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let decided = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Round {
            decided,
            stored: self.stored(t0).await,
            arm_ms,
        }
    }

    /// The server's share: each fired message's stored time minus its due time, for the
    /// timers of this round (due after `t0`).
    async fn stored(&self, t0: DateTime<Utc>) -> Vec<f64> {
        let stream = self
            .js
            .get_stream("AETHER_TIMERS")
            .await
            .or_fail("timers stream");
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("aether.timers.due.{}.>", Alarms::TYPE),
                ..Default::default()
            })
            .await
            .or_fail("consumer");
        let mut messages = consumer.messages().await.or_fail("messages");
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(2), messages.next()).await;
            let Ok(Some(Ok(m))) = next else { break };
            let info = m.info().or_fail("message info");
            let pending = info.pending;
            let stored_ns = info.published.unix_timestamp_nanos();
            let due = serde_json::from_slice::<serde_json::Value>(&m.payload)
                .ok()
                .and_then(|v| v["due"].as_str().map(str::to_string))
                .and_then(|d| DateTime::parse_from_rfc3339(&d).ok());
            if let Some(due) = due {
                if due >= t0 {
                    let due_ns = due.timestamp_nanos_opt().unwrap_or(0) as i128;
                    out.push((stored_ns - due_ns) as f64 / 1e6);
                }
            }
            if pending == 0 {
                break;
            }
        }
        out
    }
}

/// The floor: the server's message schedules alone. 1 000 `@at` schedules published straight
/// into a stream of their own, due 2 to 4 s ahead, 2 ms apart (as a round arms them), and each
/// fired message's stored time minus its due time.
async fn raw_round(js: &async_nats::jetstream::Context, round: usize) -> Vec<f64> {
    let stream = js
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "LATENESS_RAW".into(),
            subjects: vec!["lateness.>".into()],
            allow_message_schedules: true,
            max_messages_per_subject: 1,
            ..Default::default()
        })
        .await
        .or_fail("raw schedules stream");
    let t0 = ms_after_millis(Utc::now(), 0);
    let spread = 2_000 / MEASURED as i64;
    futures::stream::iter(0..MEASURED)
        .for_each_concurrent(32, |a| async move {
            let due = ms_after_millis(t0, 2_000 + a as i64 * spread);
            let mut headers = async_nats::HeaderMap::new();
            let at = format!(
                "@at {}",
                due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            headers.insert("Nats-Schedule", at.as_str());
            let target = format!("lateness.due.{round}.{a}");
            headers.insert("Nats-Schedule-Target", target.as_str());
            js.publish_with_headers(
                format!("lateness.set.{round}.{a}"),
                headers,
                due.timestamp_millis().to_string().into(),
            )
            .await
            .or_fail("raw schedule")
            .await
            .or_fail("raw schedule ack");
        })
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("lateness.due.{round}.>"),
            ..Default::default()
        })
        .await
        .or_fail("consumer");
    let mut messages = consumer.messages().await.or_fail("messages");
    let mut out = Vec::new();
    while out.len() < MEASURED {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let Ok(Some(Ok(m))) = next else {
            fail(format!(
                "only {} of {MEASURED} raw schedules fired",
                out.len()
            ))
        };
        let info = m.info().or_fail("message info");
        let due_ms: i64 = std::str::from_utf8(&m.payload)
            .ok()
            .and_then(|t| t.parse().ok())
            .or_fail("raw payload");
        out.push(
            (info.published.unix_timestamp_nanos() - i128::from(due_ms) * 1_000_000) as f64 / 1e6,
        );
    }
    out
}

fn summary(pending: usize, rounds: &[Round]) -> serde_json::Value {
    let all = sorted(rounds.iter().flat_map(|r| r.decided.clone()).collect());
    let stored = sorted(rounds.iter().flat_map(|r| r.stored.clone()).collect());
    let per_round: Vec<(f64, f64)> = rounds
        .iter()
        .map(|r| {
            let s = sorted(r.decided.clone());
            (quantile(&s, 0.5), quantile(&s, 0.99))
        })
        .collect();
    let v = json!({
        "pending": pending,
        "rounds": rounds.len(),
        "timers": all.len(),
        "p50_ms": quantile(&all, 0.5),
        "p99_ms": quantile(&all, 0.99),
        "max_ms": all.last().copied().unwrap_or(f64::NAN),
        "min_ms": all.first().copied().unwrap_or(f64::NAN),
        "round_p50_ms": per_round.iter().map(|r| r.0).collect::<Vec<_>>(),
        "round_p99_ms": per_round.iter().map(|r| r.1).collect::<Vec<_>>(),
        "server_timers": stored.len(),
        "server_p50_ms": quantile(&stored, 0.5),
        "server_p99_ms": quantile(&stored, 0.99),
        "server_min_ms": stored.first().copied().unwrap_or(f64::NAN),
        "server_max_ms": stored.last().copied().unwrap_or(f64::NAN),
        "arm_ms": rounds.iter().map(|r| r.arm_ms).collect::<Vec<_>>(),
    });
    eprintln!("{pending} pending: {v}");
    v
}

fn main() {
    let mut rounds = 5usize;
    let mut json_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .or_fail("--rounds N")
            }
            "--json" => json_path = args.next(),
            other => fail(format!(
                "unknown argument {other}; usage: reaction-lateness [--rounds N] [--json path]"
            )),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let server = NatsServer::start().or_fail("nats-server");
    if !server.version().at_least(2, 12) {
        fail(format!(
            "timers need nats-server 2.12+ (message schedules); {} is older",
            server.version()
        ));
    }
    let report = rt.block_on(async {
        let client = async_nats::connect(server.url()).await.or_fail("connect");
        let js = async_nats::jetstream::new(client.clone());
        let store = Arc::new(
            JetStreamEventStore::new(client.clone(), JetStreamConfig::default())
                .await
                .or_fail("store"),
        );
        let sink = Sink::default();
        let host = ActorHost::new(
            Alarms(sink.clone()),
            store.clone(),
            RuntimeConfig::default(),
        );
        let reactor = Arc::new(
            Reactor::new(Targets::new().host(host.clone()))
                .with_timers_on(js.clone(), TimersConfig::default())
                .await
                .or_fail("timers"),
        );
        reactor.attach();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(Arc::clone(&reactor).run(
            store.clone() as Arc<dyn EventLog>,
            Arc::new(InMemoryProjectionStore::new()),
            ReactorConfig::new("lateness"),
            shutdown.clone(),
        ));
        let run = Run { host, sink, js };

        let mut scenarios = Vec::new();
        // A first round warms the path up (actors activated, consumers created): not counted.
        run.round().await;
        let mut done = Vec::new();
        for _ in 0..rounds {
            done.push(run.round().await);
        }
        scenarios.push(summary(MEASURED, &done));

        // 99 000 more, due one to two hours ahead.
        let started = Instant::now();
        let base = ms_after_millis(Utc::now(), 3_600_000);
        futures::stream::iter(0..BACKGROUND_ACTORS)
            .for_each_concurrent(32, |b| {
                let host = &run.host;
                async move {
                    let dues = (0..PER_BACKGROUND_ACTOR)
                        .map(|i| {
                            ms_after_millis(base, ((b * PER_BACKGROUND_ACTOR + i) * 36) as i64)
                        })
                        .collect();
                    host.send(&format!("b-{b}"), AlarmCommand::Arm { dues })
                        .await
                        .or_fail("arming the background");
                }
            })
            .await;
        let decided_s = started.elapsed().as_secs_f64();
        // Wait for the reactor to set all their schedules.
        let stream = run
            .js
            .get_stream("AETHER_TIMERS")
            .await
            .or_fail("timers stream");
        let background = (BACKGROUND_ACTORS * PER_BACKGROUND_ACTOR) as u64;
        let mut last = (0u64, Instant::now());
        loop {
            let mut stream = stream.clone();
            let n = stream
                .info()
                .await
                .or_fail("timers stream info")
                .state
                .messages;
            if n != last.0 {
                last = (n, Instant::now());
            } else if n >= background && last.1.elapsed() > Duration::from_secs(2) {
                break;
            }
            if started.elapsed() > Duration::from_secs(600) {
                fail(format!(
                    "the reactor set {n} of {background} schedules in ten minutes"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "background: {background} timers decided in {decided_s:.1} s, scheduled after {:.1} s; \
             timers stream holds {} messages",
            started.elapsed().as_secs_f64() - 2.0,
            last.0
        );
        run.round().await;
        let mut done = Vec::new();
        for _ in 0..rounds {
            done.push(run.round().await);
        }
        scenarios.push(summary(MEASURED + background as usize, &done));

        shutdown.cancel();
        running.await.or_fail("reactor task").or_fail("reactor");

        // The floor, with the reactor stopped: the server's schedules alone.
        let mut raw = Vec::new();
        for round in 0..rounds {
            raw.extend(raw_round(&run.js, round).await);
        }
        let raw = sorted(raw);
        let raw = json!({
            "timers": raw.len(),
            "p50_ms": quantile(&raw, 0.5),
            "p99_ms": quantile(&raw, 0.99),
            "min_ms": raw.first().copied().unwrap_or(f64::NAN),
            "max_ms": raw.last().copied().unwrap_or(f64::NAN),
        });
        eprintln!("raw schedules: {raw}");
        json!({
            "raw_schedules": raw,
            "server": server.version().to_string(),
            "machine": std::env::var("AETHER_BENCH_MACHINE").unwrap_or_default(),
            "load": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "scenarios": scenarios,
        })
    });
    let text = serde_json::to_string_pretty(&report).or_fail("json");
    match json_path {
        Some(p) => std::fs::write(&p, text).or_fail("writing the results"),
        None => println!("{text}"),
    }
}
