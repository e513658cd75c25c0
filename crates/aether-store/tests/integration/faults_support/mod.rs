//! Shared by the fault tests: writers that append continuously and record every outcome, and a
//! check that the stream holds exactly what was acknowledged.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_core::{Error, Event, EventStore};
use aether_store::{JetStreamConfig, JetStreamEventStore};

/// A save that returned `Ok`.
#[derive(Debug, Clone)]
pub(crate) struct Acked {
    pub actor: String,
    pub version: u64,
    pub id: String,
    /// How long the save took.
    pub latency: Duration,
}

/// A save or read that failed, as the writer saw it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub what: String,
    pub retryable: bool,
    pub conflict: bool,
}

/// What all writers saw.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub acked: Vec<Acked>,
    pub failures: Vec<Failure>,
}

impl Outcome {
    /// Failures other than version conflicts (which are the normal result of contention).
    pub(crate) fn faults(&self) -> impl Iterator<Item = &Failure> {
        self.failures.iter().filter(|f| !f.conflict)
    }

    /// Failures that are not typed as retryable: each one is a broken promise.
    pub(crate) fn non_retryable(&self) -> Vec<&Failure> {
        self.failures.iter().filter(|f| !f.retryable).collect()
    }
}

/// Writers appending to a shared set of actors until stopped.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    handles: Vec<tokio::task::JoinHandle<Outcome>>,
}

/// The actor names used by a load on `actors` actors.
pub(crate) fn actor_names(prefix: &str, actors: usize) -> Vec<String> {
    (0..actors).map(|i| format!("{prefix}-{i}")).collect()
}

impl Load {
    /// Starts one writer per store; each picks actors at random from `actors` and appends the
    /// next version it believes in. Conflicts make it adopt the current version; other errors
    /// make it forget what it knew and ask again.
    pub(crate) fn start<S: EventStore + 'static>(stores: Vec<Arc<S>>, actors: Vec<String>) -> Self {
        Self::start_with(stores, actors, false)
    }

    /// Like [`start`](Self::start), but with `partitioned` each writer only writes the actors
    /// whose index modulo the number of writers is its own (no contention between writers).
    pub(crate) fn start_with<S: EventStore + 'static>(
        stores: Vec<Arc<S>>,
        actors: Vec<String>,
        partitioned: bool,
    ) -> Self {
        let writers = stores.len();
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let actors = Arc::new(actors);
        let handles = stores
            .into_iter()
            .enumerate()
            .map(|(w, store)| {
                let stop = stop.clone();
                let acked = acked.clone();
                let failed = failed.clone();
                let actors: Arc<Vec<String>> = if partitioned {
                    Arc::new(
                        actors
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| i % writers == w)
                            .map(|(_, a)| a.clone())
                            .collect(),
                    )
                } else {
                    actors.clone()
                };
                tokio::spawn(
                    async move { write_loop(w, store, &actors, &stop, &acked, &failed).await },
                )
            })
            .collect();
        Self {
            stop,
            acked,
            failed,
            handles,
        }
    }

    /// Saves acknowledged so far.
    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Failed saves and reads so far (conflicts included).
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until `more` further saves were acknowledged.
    ///
    /// # Panics
    /// After `timeout`.
    pub(crate) async fn wait_for_acks(&self, more: u64, timeout: Duration) {
        let target = self.acked() + more;
        let deadline = Instant::now() + timeout;
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "writers made no progress: {} of {target} acks after {timeout:?} ({} failures)",
                self.acked(),
                self.failed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `more` further failures were seen.
    ///
    /// # Panics
    /// After `timeout`.
    pub(crate) async fn wait_for_failures(&self, more: u64, timeout: Duration) {
        let target = self.failed() + more;
        let deadline = Instant::now() + timeout;
        while self.failed() < target {
            assert!(
                Instant::now() < deadline,
                "no save failed within {timeout:?} although a server is down"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the writers and collects what they saw.
    pub(crate) async fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Outcome::default();
        for h in self.handles {
            let o = h.await.expect("writer task panicked");
            all.acked.extend(o.acked);
            all.failures.extend(o.failures);
        }
        all
    }
}

fn failure(e: &Error, what: &str) -> Failure {
    Failure {
        what: format!("{what}: {e} ({e:?})"),
        retryable: e.is_retryable(),
        conflict: e.is_version_conflict(),
    }
}

async fn write_loop<S: EventStore>(
    writer: usize,
    store: Arc<S>,
    actors: &[String],
    stop: &AtomicBool,
    acked: &AtomicU64,
    failed: &AtomicU64,
) -> Outcome {
    let mut out = Outcome::default();
    let mut known: HashMap<&str, u64> = HashMap::new();
    let mut rng = XorShift((writer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let actor = actors[rng.below(actors.len())].as_str();
        let latest = match known.get(actor) {
            Some(v) => *v,
            None => match store.get_latest_version(actor).await {
                Ok(v) => v,
                Err(e) => {
                    out.failures.push(failure(&e, "reading the latest version"));
                    failed.fetch_add(1, Ordering::Relaxed);
                    // Back off while the server is away rather than spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let version = latest + 1;
        seq += 1;
        let event = Event::new("Ticked", actor, version)
            .with_field("writer", writer as u64)
            .with_field("seq", seq);
        let started = Instant::now();
        match store.save_event(&event).await {
            Ok(()) => {
                out.acked.push(Acked {
                    actor: actor.to_string(),
                    version,
                    id: event.id.clone(),
                    latency: started.elapsed(),
                });
                acked.fetch_add(1, Ordering::Relaxed);
                known.insert(actor, version);
            }
            Err(e) => {
                failed.fetch_add(1, Ordering::Relaxed);
                out.failures.push(failure(&e, "saving"));
                match e.as_version_conflict() {
                    Some(c) => {
                        known.insert(actor, c.current_version);
                    }
                    None => {
                        // The save may or may not have gone in: ask the store next time.
                        known.remove(actor);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
    }
    out
}

/// Reads an actor's history, retrying while the cluster settles.
pub(crate) async fn read_all(store: &JetStreamEventStore, actor: &str) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.get_events(actor, 0).await {
            Ok(events) => return events,
            // Right after a failover a replay may find no leader yet: that must be retryable.
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("replay of {actor} kept failing: {e:?}"),
        }
    }
}

/// Two events stored under one version of one actor.
#[derive(Debug, Clone)]
pub(crate) struct DuplicateVersion {
    pub actor: String,
    pub version: u64,
    /// Each event's id, data, and whether its save was acknowledged.
    pub events: Vec<(String, String, bool)>,
}

/// What a read of every actor's history found, compared with what the writers saw.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Events found.
    pub total: usize,
    /// Acknowledged saves not found.
    pub lost: Vec<Acked>,
    /// Acknowledged saves found at another actor or version.
    pub misplaced: Vec<Acked>,
    /// Event ids found more than once.
    pub repeated_ids: Vec<String>,
    /// Versions found more than once, or out of order.
    pub duplicate_versions: Vec<DuplicateVersion>,
}

impl Report {
    /// Whether nothing was lost, misplaced, repeated or written twice.
    pub(crate) fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.misplaced.is_empty()
            && self.repeated_ids.is_empty()
            && self.duplicate_versions.is_empty()
    }
}

/// Reads every actor's history through `store` and compares it with what the writers saw.
pub(crate) async fn check(
    store: &JetStreamEventStore,
    actors: &[String],
    outcome: &Outcome,
) -> Report {
    let acked_ids: std::collections::HashSet<&str> =
        outcome.acked.iter().map(|a| a.id.as_str()).collect();
    let mut report = Report::default();
    let mut found: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for actor in actors {
        let events = read_all(store, actor).await;
        let mut prev: Option<&Event> = None;
        for e in &events {
            assert_eq!(
                &e.actor_id, actor,
                "an event of another actor in {actor}'s history"
            );
            if let Some(p) = prev {
                if e.version <= p.version {
                    report.duplicate_versions.push(DuplicateVersion {
                        actor: actor.clone(),
                        version: e.version,
                        events: [p, e]
                            .iter()
                            .map(|x| {
                                (
                                    x.id.clone(),
                                    serde_json::to_string(&x.data).unwrap_or_default(),
                                    acked_ids.contains(x.id.as_str()),
                                )
                            })
                            .collect(),
                    });
                }
            }
            prev = Some(e);
            found
                .entry(e.id.clone())
                .or_default()
                .push((actor.clone(), e.version));
        }
        report.total += events.len();
    }
    for a in &outcome.acked {
        match found.get(&a.id).map(Vec::as_slice) {
            Some([(actor, version)]) if (actor, *version) == (&a.actor, a.version) => {}
            Some([_]) => report.misplaced.push(a.clone()),
            Some(_) => {}
            None => report.lost.push(a.clone()),
        }
    }
    report.repeated_ids = found
        .into_iter()
        .filter(|(_, places)| places.len() > 1)
        .map(|(id, _)| id)
        .collect();
    report
}

/// Checks, through `store`, that every acknowledged save is in the stream exactly once at its
/// version, and that every actor's versions strictly increase. Returns the number of events
/// found.
///
/// # Panics
/// On any violation, with details.
pub(crate) async fn verify(
    store: &JetStreamEventStore,
    actors: &[String],
    outcome: &Outcome,
) -> usize {
    let report = check(store, actors, outcome).await;
    assert!(
        report.is_clean(),
        "{} lost, {} misplaced, {} ids repeated, {} versions written twice: {:#?}",
        report.lost.len(),
        report.misplaced.len(),
        report.repeated_ids.len(),
        report.duplicate_versions.len(),
        (
            &report.lost[..report.lost.len().min(5)],
            &report.misplaced[..report.misplaced.len().min(5)],
            &report.repeated_ids[..report.repeated_ids.len().min(5)],
            &report.duplicate_versions[..report.duplicate_versions.len().min(5)],
        )
    );
    report.total
}

/// Every failure must be typed as retryable (unavailable or a conflict).
///
/// # Panics
/// Listing the failures that were not.
pub(crate) fn assert_all_retryable(outcome: &Outcome) {
    assert_retryable_except(outcome, |_| false);
}

/// Like [`assert_all_retryable`], tolerating the failures `known` accepts.
///
/// # Panics
/// Listing the other failures that were not retryable.
pub(crate) fn assert_retryable_except(outcome: &Outcome, known: impl Fn(&Failure) -> bool) {
    let bad: Vec<&Failure> = outcome
        .non_retryable()
        .into_iter()
        .filter(|f| !known(f))
        .collect();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for f in &bad {
        *kinds.entry(f.what.clone()).or_default() += 1;
    }
    assert!(
        bad.is_empty(),
        "{} failures were not retryable: {kinds:#?}",
        bad.len()
    );
}

/// A client that fails over between `urls` and reconnects quickly.
pub(crate) async fn connect(urls: &[String]) -> async_nats::Client {
    connect_with(urls, false).await
}

/// A client that tries `urls` in the given order (so tests can spread clients over servers),
/// pings every second so a frozen server is noticed within seconds, and reconnects quickly.
pub(crate) async fn connect_with(urls: &[String], ordered: bool) -> async_nats::Client {
    connect_retrying(urls, ordered, false).await
}

/// A client of the one server at `url` (a partitionable cluster's client proxy, say) that never
/// moves to another server it hears of, so it stays on its side of a partition; it pings and
/// reconnects like [`connect_with`].
pub(crate) async fn connect_pinned(url: &str) -> async_nats::Client {
    connect_retrying(&[url.to_string()], true, true).await
}

async fn connect_retrying(urls: &[String], ordered: bool, pinned: bool) -> async_nats::Client {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut options = async_nats::ConnectOptions::new()
            .reconnect_delay_callback(|n| Duration::from_millis(50 * (n.min(10) as u64)))
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(1));
        if ordered {
            options = options.retain_servers_order();
        }
        if pinned {
            options = options.ignore_discovered_servers();
        }
        let attempt = options.connect(urls).await;
        match attempt {
            Ok(c) => return c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot connect to {urls:?}: {e}"),
        }
    }
}

/// A store on `client` whose requests time out after `timeout`, so an outage turns into errors
/// quickly. Retries while the stream cannot be created or found yet (a fresh cluster).
pub(crate) async fn open_store(
    client: async_nats::Client,
    config: JetStreamConfig,
    timeout: Duration,
) -> JetStreamEventStore {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match JetStreamEventStore::new(client.clone(), config.clone().request_timeout(timeout))
            .await
        {
            Ok(s) => return s,
            // A fresh cluster may not place a replicated stream yet: any error is retried.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot open the store: {e:?}"),
        }
    }
}

/// Median and 99th percentile of the acknowledged saves' latencies.
pub(crate) fn percentiles(acked: &[Acked]) -> (Duration, Duration) {
    let mut l: Vec<Duration> = acked.iter().map(|a| a.latency).collect();
    if l.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    l.sort();
    let at = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize];
    (at(0.50), at(0.99))
}

/// A small deterministic generator, enough to spread writes over actors.
pub(crate) struct XorShift(pub u64);

impl XorShift {
    /// The next value in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}
