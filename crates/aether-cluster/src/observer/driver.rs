//! The observer's I/O: one task feeds [`ObservedState`] from three sources merged into one
//! stream of inputs (the membership subjects, the lease's key, the table's key) and a sweep
//! timer, and hands what changed to the subscribers of [`ClusterObserver::changes`].
//!
//! Each source heals itself: a subscription that ends is made again, a watch that breaks is
//! replaced by a read of the key and a new watch, with growing pauses in between. Nothing here
//! publishes on the cluster's subjects or writes its bucket.
//!
//! [`ClusterObserver::changes`]: super::ClusterObserver::changes

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aether_core::Backoff;
use aether_nats::{KvBucket, Versioned};
use async_nats::{Client, Subscriber};
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::state::{Input, MemberSubject, ObservedState};
use super::ClusterChange;
use crate::routing::Subjects;

/// The first pause before a source is set up again, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn backoff() -> Backoff {
    Backoff::new(RETRY_FIRST, RETRY_MAX).with_jitter()
}

/// The sources as [`open`](super::ClusterObserver::open) set them up.
pub(super) struct Sources {
    pub(super) client: Client,
    pub(super) subjects: Subjects,
    pub(super) members: Subscriber,
    pub(super) kv: KvBucket,
    pub(super) lease: BoxStream<'static, aether_core::Result<Versioned>>,
    pub(super) table: BoxStream<'static, aether_core::Result<Versioned>>,
}

/// Feeds `state` until `cancel`; every change goes to `changes` (nobody listening is fine).
pub(super) async fn run(
    sources: Sources,
    state: Arc<Mutex<ObservedState>>,
    changes: broadcast::Sender<ClusterChange>,
    sweep_every: Duration,
    cancel: CancellationToken,
) {
    let Sources {
        client,
        subjects,
        members,
        kv,
        lease,
        table,
    } = sources;
    let mut inputs = stream::select_all([
        member_inputs(client, subjects, members),
        key_inputs(kv.clone(), crate::leader::LEADER_KEY, lease, Input::Lease),
        key_inputs(kv, crate::assignment::ASSIGNMENT_KEY, table, Input::Table),
    ]);
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let input = tokio::select! {
            () = cancel.cancelled() => return,
            _ = sweep.tick() => Input::Tick,
            input = inputs.next() => match input {
                Some(input) => input,
                // Every source retries for ever: only cancellation ends them.
                None => return,
            },
        };
        let changed = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(input, Instant::now());
        for change in changed {
            // An error only means that nobody is listening.
            let _ = changes.send(change);
        }
    }
}

/// Every message on the membership subjects, as received; a subscription that ends is made
/// again.
fn member_inputs(
    client: Client,
    subjects: Subjects,
    first: Subscriber,
) -> BoxStream<'static, Input> {
    struct Source {
        client: Client,
        heartbeat: String,
        leave: String,
        all: String,
        sub: Option<Subscriber>,
        backoff: Backoff,
    }
    let source = Source {
        client,
        heartbeat: subjects.heartbeat(),
        leave: subjects.leave(),
        all: subjects.members_all(),
        sub: Some(first),
        backoff: backoff(),
    };
    stream::unfold(source, |mut s| async move {
        loop {
            match &mut s.sub {
                Some(sub) => match sub.next().await {
                    Some(msg) => {
                        s.backoff.reset();
                        let subject = if msg.subject.as_str() == s.heartbeat {
                            MemberSubject::Heartbeat
                        } else if msg.subject.as_str() == s.leave {
                            MemberSubject::Leave
                        } else {
                            // Nothing the cluster sends: ignored, as the nodes ignore it.
                            continue;
                        };
                        return Some((Input::Member(subject, msg.payload), s));
                    }
                    None => {
                        tracing::warn!(subject = %s.all, "cluster observer: subscription ended");
                        s.sub = None;
                    }
                },
                None => {
                    s.backoff.wait().await;
                    match s.client.subscribe(s.all.clone()).await {
                        Ok(sub) => s.sub = Some(sub),
                        Err(e) => {
                            tracing::debug!(subject = %s.all, error = %e, "cluster observer: subscribing again")
                        }
                    }
                }
            }
        }
    })
    .boxed()
}

/// Every write of `key`, as watched; a watch that breaks is replaced by a read of the key
/// (whose answer is passed on) and a new watch.
fn key_inputs(
    kv: KvBucket,
    key: &'static str,
    first: BoxStream<'static, aether_core::Result<Versioned>>,
    input: fn(Versioned) -> Input,
) -> BoxStream<'static, Input> {
    struct Source {
        kv: KvBucket,
        key: &'static str,
        watch: Option<BoxStream<'static, aether_core::Result<Versioned>>>,
        backoff: Backoff,
        input: fn(Versioned) -> Input,
    }
    let source = Source {
        kv,
        key,
        watch: Some(first),
        backoff: backoff(),
        input,
    };
    stream::unfold(source, |mut s| async move {
        loop {
            match &mut s.watch {
                Some(watch) => match watch.next().await {
                    Some(Ok(read)) => {
                        s.backoff.reset();
                        return Some(((s.input)(read), s));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(key = s.key, error = %e, "cluster observer: watch broke");
                        s.watch = None;
                    }
                    None => s.watch = None,
                },
                None => {
                    s.backoff.wait().await;
                    let read = match s.kv.read(s.key).await {
                        Ok(read) => read,
                        Err(e) => {
                            tracing::debug!(key = s.key, error = %e, "cluster observer: reading again");
                            continue;
                        }
                    };
                    match s.kv.watch(s.key).await {
                        Ok(watch) => s.watch = Some(watch),
                        Err(e) => {
                            tracing::debug!(key = s.key, error = %e, "cluster observer: watching again")
                        }
                    }
                    return Some(((s.input)(read), s));
                }
            }
        }
    })
    .boxed()
}
