//! Testing actors without a store or a server: given events, when a command, then events or a
//! rejection; and a check that live handling and replay agree.

use std::fmt::Debug;

use aether_core::Event;

use crate::actor::Actor;
use crate::event::EventCodec;

/// A given/when/then test of one actor type. Events pass through the actor's codec on the way
/// (encoded to their stored form and decoded back), so a serde mistake in an event type fails
/// the test instead of production.
///
/// The `then_*` methods panic with a description of the difference, like `assert_eq!`.
///
/// ```
/// use aether_actor::testing::ActorTest;
/// # use aether_actor::{Actor, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// # struct Counter { value: i64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum Added { Added { by: i64 } }
/// # impl DomainEvent for Added { fn event_type(&self) -> &'static str { "Added" } }
/// # #[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
/// # #[error("too big")] struct TooBig;
/// # struct Counters;
/// # impl Actor for Counters {
/// #     type State = Counter; type Command = i64; type Event = Added; type Reply = i64;
/// #     type Error = TooBig; const TYPE: &'static str = "counter";
/// #     async fn decide(&self, _: &str, s: &Counter, by: &i64) -> Result<Vec<Added>, TooBig> {
/// #         if s.value + by > 10 { return Err(TooBig) }
/// #         Ok(vec![Added::Added { by: *by }])
/// #     }
/// #     fn apply(s: &mut Counter, e: &Added) { let Added::Added { by } = e; s.value += by; }
/// #     fn reply(s: &Counter, _: &i64, _: &[Added]) -> i64 { s.value }
/// # }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// ActorTest::new(Counters)
///     .given([Added::Added { by: 4 }])
///     .when(3)
///     .await
///     .then_expect_events(&[Added::Added { by: 3 }])
///     .then_expect_reply(&7);
///
/// ActorTest::new(Counters)
///     .given([Added::Added { by: 8 }])
///     .when(3)
///     .await
///     .then_expect_rejection(&TooBig);
/// # }
/// ```
#[derive(Debug)]
pub struct ActorTest<A: Actor> {
    actor: A,
    actor_id: String,
    codec: EventCodec<A::Event>,
    state: A::State,
    version: u64,
}

impl<A: Actor> ActorTest<A> {
    /// A test of `actor`, with no previous events, on actor id `test-actor`.
    pub fn new(actor: A) -> Self {
        Self {
            actor,
            actor_id: "test-actor".into(),
            codec: EventCodec::new(A::upcasters()),
            state: A::State::default(),
            version: 0,
        }
    }

    /// Sets the actor id `decide` sees.
    pub fn actor_id(mut self, id: impl Into<String>) -> Self {
        self.actor_id = id.into();
        self
    }

    /// The actor's history before the command.
    ///
    /// # Panics
    /// When an event does not survive its stored form (encode, then decode).
    pub fn given(mut self, events: impl IntoIterator<Item = A::Event>) -> Self {
        for event in events {
            let event = round_trip(&self.codec, &self.actor_id, self.version + 1, &event);
            A::apply(&mut self.state, &event);
            self.version += 1;
        }
        self
    }

    /// The actor's history as stored events (as an older version of the application wrote
    /// them, for example), decoded through the actor's upcasters.
    ///
    /// # Panics
    /// When an event does not decode.
    pub fn given_stored(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        for stored in events {
            let event = match self.codec.decode(&stored) {
                Ok(e) => e,
                Err(e) => panic!("given event does not decode: {e}"),
            };
            A::apply(&mut self.state, &event);
            self.version = stored.version.max(self.version + 1);
        }
        self
    }

    /// Decides `command` on the state the given events built.
    pub async fn when(self, command: A::Command) -> Then<A> {
        let decided = self
            .actor
            .decide(&self.actor_id, &self.state, &command)
            .await;
        let mut state = self.state;
        let outcome = match decided {
            Ok(events) => {
                let mut version = self.version;
                let mut applied = Vec::with_capacity(events.len());
                for event in &events {
                    version += 1;
                    let event = round_trip(&self.codec, &self.actor_id, version, event);
                    A::apply(&mut state, &event);
                    applied.push(event);
                }
                let reply = A::reply(&state, &command, &applied);
                Ok((applied, reply))
            }
            Err(rejection) => Err(rejection),
        };
        Then { state, outcome }
    }
}

fn round_trip<E: crate::DomainEvent>(
    codec: &EventCodec<E>,
    actor_id: &str,
    version: u64,
    event: &E,
) -> E {
    let stored = match codec.encode(event) {
        Ok(encoded) => encoded.into_event(actor_id, version),
        Err(e) => panic!("event cannot be stored: {e}"),
    };
    match codec.decode(&stored) {
        Ok(e) => e,
        Err(e) => panic!("event does not survive its stored form: {e}"),
    }
}

/// The decided events and the reply, or the rejection.
type Decided<A> = Result<(Vec<<A as Actor>::Event>, <A as Actor>::Reply), <A as Actor>::Error>;

/// The outcome of [`ActorTest::when`].
pub struct Then<A: Actor> {
    state: A::State,
    outcome: Decided<A>,
}

impl<A: Actor> std::fmt::Debug for Then<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Then")
            .field("rejected", &self.outcome.is_err())
            .finish_non_exhaustive()
    }
}

impl<A: Actor> Then<A> {
    /// The state after the command's events.
    pub fn state(&self) -> &A::State {
        &self.state
    }

    /// The decided events (after their stored form), or the rejection.
    pub fn events(&self) -> Result<&[A::Event], &A::Error> {
        self.outcome.as_ref().map(|(e, _)| e.as_slice())
    }

    /// The reply, unless the command was rejected.
    pub fn reply(&self) -> Option<&A::Reply> {
        self.outcome.as_ref().ok().map(|(_, r)| r)
    }

    /// Asserts the command decided exactly `expected`.
    ///
    /// # Panics
    /// When it decided other events or was rejected.
    #[track_caller]
    pub fn then_expect_events(&self, expected: &[A::Event]) -> &Self
    where
        A::Event: PartialEq + Debug,
        A::Error: Debug,
    {
        match &self.outcome {
            Ok((events, _)) => assert_eq!(events.as_slice(), expected, "decided events"),
            Err(e) => panic!("expected events {expected:?}, but the command was rejected: {e:?}"),
        }
        self
    }

    /// Asserts the command was rejected with `expected`.
    ///
    /// # Panics
    /// When it was accepted or rejected otherwise.
    #[track_caller]
    pub fn then_expect_rejection(&self, expected: &A::Error) -> &Self
    where
        A::Event: Debug,
        A::Error: PartialEq + Debug,
    {
        match &self.outcome {
            Ok((events, _)) => {
                panic!("expected rejection {expected:?}, but the command decided {events:?}")
            }
            Err(e) => assert_eq!(e, expected, "rejection"),
        }
        self
    }

    /// Asserts the reply.
    ///
    /// # Panics
    /// When the reply differs or the command was rejected.
    #[track_caller]
    pub fn then_expect_reply(&self, expected: &A::Reply) -> &Self
    where
        A::Reply: PartialEq + Debug,
        A::Error: Debug,
    {
        match &self.outcome {
            Ok((_, reply)) => assert_eq!(reply, expected, "reply"),
            Err(e) => panic!("expected reply {expected:?}, but the command was rejected: {e:?}"),
        }
        self
    }
}

/// What [`check_replay`] went through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayReport {
    /// Commands that decided events.
    pub accepted: usize,
    /// Commands the actor refused.
    pub rejected: usize,
    /// Events stored.
    pub events: usize,
}

/// Handles `commands` in order on one actor the way the runtime does (rejections write
/// nothing), and checks after each that the live state equals the state rebuilt by replaying
/// the stored form of every event so far, and that the state survives a snapshot. Use it in
/// a property test over arbitrary command sequences.
///
/// # Errors
/// A description of the first command after which live state and replay disagree, or of an
/// event or state that does not survive its stored form.
///
/// ```
/// # use aether_actor::{Actor, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// # struct Counter { value: i64 }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum Added { Added { by: i64 } }
/// # impl DomainEvent for Added { fn event_type(&self) -> &'static str { "Added" } }
/// # #[derive(Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
/// # #[error("never")] struct Never;
/// # struct Counters;
/// # impl Actor for Counters {
/// #     type State = Counter; type Command = i64; type Event = Added; type Reply = i64;
/// #     type Error = Never; const TYPE: &'static str = "counter";
/// #     async fn decide(&self, _: &str, _: &Counter, by: &i64) -> Result<Vec<Added>, Never> {
/// #         Ok(vec![Added::Added { by: *by }])
/// #     }
/// #     fn apply(s: &mut Counter, e: &Added) { let Added::Added { by } = e; s.value += by; }
/// #     fn reply(s: &Counter, _: &i64, _: &[Added]) -> i64 { s.value }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let report = aether_actor::testing::check_replay(&Counters, [1, 2, -5]).await.unwrap();
/// assert_eq!(report.events, 3);
/// # }
/// ```
pub async fn check_replay<A: Actor>(
    actor: &A,
    commands: impl IntoIterator<Item = A::Command>,
) -> Result<ReplayReport, String> {
    let codec = EventCodec::<A::Event>::new(A::upcasters());
    let actor_id = "replay-check";
    let mut live = A::State::default();
    let mut replayed = A::State::default();
    let mut report = ReplayReport::default();
    for (i, command) in commands.into_iter().enumerate() {
        let events = match actor.decide(actor_id, &live, &command).await {
            Ok(events) => events,
            Err(_) => {
                report.rejected += 1;
                continue;
            }
        };
        report.accepted += 1;
        for event in &events {
            report.events += 1;
            let stored = codec
                .encode(event)
                .map_err(|e| format!("command {i}: {e}"))?
                .into_event(actor_id, report.events as u64);
            A::apply(&mut live, event);
            let decoded = codec
                .decode(&stored)
                .map_err(|e| format!("command {i}: {e}"))?;
            A::apply(&mut replayed, &decoded);
        }
        let live_json = serde_json::to_value(&live).map_err(|e| e.to_string())?;
        let replayed_json = serde_json::to_value(&replayed).map_err(|e| e.to_string())?;
        if live_json != replayed_json {
            return Err(format!(
                "after command {i}, live state {live_json} differs from the replayed state \
                 {replayed_json}"
            ));
        }
        let snapshotted: A::State = serde_json::from_value(live_json.clone()).map_err(|e| {
            format!("after command {i}, the state does not survive a snapshot: {e}")
        })?;
        let snapshot_json = serde_json::to_value(&snapshotted).map_err(|e| e.to_string())?;
        if snapshot_json != live_json {
            return Err(format!(
                "after command {i}, the state {live_json} comes back from a snapshot as \
                 {snapshot_json}"
            ));
        }
    }
    Ok(report)
}
