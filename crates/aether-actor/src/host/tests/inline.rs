//! `dispatch_inline`: a command on an idle actor runs on the caller's task, what queues behind
//! it goes to a runner, and a caller dropped or a panic mid-command ends the activation.

use std::sync::atomic::AtomicUsize;
use std::sync::Mutex as StdMutex;

use tokio::sync::Semaphore;
use tokio::task::{Id, JoinHandle};

use super::stock;
use super::*;

/// Each command (its `Debug` form) and the task it ran on, in order.
type RanOn = Arc<StdMutex<Vec<(String, Option<Id>)>>>;

/// The shop, recording the task each command ran on; `Reserve` waits at `gate` first, and
/// `Reserve(0)` panics after it.
#[derive(Clone)]
struct Watched {
    ran_on: RanOn,
    gate: Arc<Semaphore>,
}

impl Watched {
    fn new() -> Self {
        Self {
            ran_on: Arc::new(StdMutex::new(Vec::new())),
            gate: Arc::new(Semaphore::new(0)),
        }
    }

    /// The task each command of `what` (its `Debug` form) ran on, in order.
    fn tasks_of(&self, what: &str) -> Vec<Option<Id>> {
        self.ran_on
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == what)
            .map(|(_, t)| *t)
            .collect()
    }
}

impl Actor for Watched {
    type State = Stock;
    type Command = StockCommand;
    type Event = StockEvent;
    type Reply = u32;
    type Error = StockError;
    const TYPE: &'static str = "stock";

    async fn decide(
        &self,
        id: &str,
        state: &Stock,
        command: &StockCommand,
    ) -> Result<Vec<StockEvent>, StockError> {
        self.ran_on
            .lock()
            .unwrap()
            .push((format!("{command:?}"), tokio::task::try_id()));
        if let StockCommand::Reserve(n) = command {
            self.gate.acquire().await.unwrap().forget();
            assert!(*n > 0, "reserving nothing is a bug");
        }
        Shop.decide(id, state, command).await
    }

    fn apply(state: &mut Stock, event: &StockEvent) {
        Shop::apply(state, event);
    }

    fn reply(state: &Stock, command: &StockCommand, events: &[StockEvent]) -> u32 {
        Shop::reply(state, command, events)
    }
}

fn watched(s: &Arc<InMemoryEventStore>) -> (ActorHost<Watched>, Watched) {
    let actor = Watched::new();
    let h = ActorHost::new(
        actor.clone(),
        Arc::clone(s) as Arc<dyn SnapshotStore>,
        RuntimeConfig::default(),
    );
    (h, actor)
}

/// Yields until `cond` holds (the other tasks of this one-thread runtime run meanwhile).
async fn until(cond: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    assert!(cond(), "condition never held");
}

/// How a test's sender hands its command to the host.
#[derive(Clone, Copy)]
enum Via {
    Inline,
    Dispatch,
}

/// Sends `command` to actor `sku` from a task of its own: the outcome and that task's id.
/// `sent` counts the sender just before it queues, which it does in the same poll (nothing
/// waits in between), so once `sent` has counted every sender, all have queued.
fn from_a_task(
    h: &ActorHost<Watched>,
    command: StockCommand,
    via: Via,
    sent: &Arc<AtomicUsize>,
) -> JoinHandle<(Outcome<Watched>, Id)> {
    let (h, sent) = (h.clone(), Arc::clone(sent));
    tokio::spawn(async move {
        sent.fetch_add(1, Ordering::SeqCst);
        let outcome = match via {
            Via::Inline => h.dispatch_inline("sku", command.into()).await,
            Via::Dispatch => h.dispatch("sku", command.into()).await,
        };
        (outcome, tokio::task::id())
    })
}

#[tokio::test]
async fn an_idle_actors_command_runs_on_the_callers_task_and_a_busy_ones_on_its_runner() {
    let s = store();
    let (h, actor) = watched(&s);
    let sent = Arc::new(AtomicUsize::new(0));
    let inline = from_a_task(&h, StockCommand::Restock(2), Via::Inline, &sent);
    let (outcome, caller) = inline.await.unwrap();
    assert_eq!(reply(outcome), (2, 1));
    assert_eq!(actor.tasks_of("Restock(2)"), [Some(caller)]);

    // `dispatch` hands the command to a task of the actor's own.
    let spawned = from_a_task(&h, StockCommand::Restock(3), Via::Dispatch, &sent);
    let (outcome, caller) = spawned.await.unwrap();
    assert_eq!(reply(outcome), (5, 2));
    let ran = actor.tasks_of("Restock(3)");
    assert!(ran[0].is_some() && ran[0] != Some(caller), "{ran:?}");
    assert_eq!(h.stats().activations, 1);
}

#[tokio::test]
async fn commands_queued_behind_an_inline_command_go_to_a_runner_and_keep_its_state() {
    let s = store();
    let (h, actor) = watched(&s);
    // Inline, so the actor is idle once it has answered.
    let first = h.dispatch_inline("sku", StockCommand::Restock(10).into());
    assert_eq!(reply(first.await), (10, 1));
    let sent = Arc::new(AtomicUsize::new(0));
    let inline = from_a_task(&h, StockCommand::Reserve(1), Via::Inline, &sent);
    // Wait for the inline command to hold the actor, then queue more behind it.
    until(|| actor.tasks_of("Reserve(1)").len() == 1).await;
    let queued: Vec<_> = (0..5)
        .map(|_| from_a_task(&h, StockCommand::Restock(1), Via::Inline, &sent))
        .collect();
    until(|| sent.load(Ordering::SeqCst) == 6).await;
    actor.gate.add_permits(1);
    let (outcome, caller) = inline.await.unwrap();
    assert_eq!(reply(outcome), (9, 2));
    let mut versions = Vec::new();
    for q in queued {
        versions.push(reply(q.await.unwrap().0).1);
    }
    versions.sort_unstable();
    assert_eq!(versions, [3, 4, 5, 6, 7]);
    // The inline caller answered its own command only; a runner took the rest.
    let runners = actor.tasks_of("Restock(1)");
    assert_eq!(runners.len(), 5);
    assert!(runners.iter().all(|t| t.is_some() && *t != Some(caller)));
    assert_eq!(h.send("sku", StockCommand::Get).await.unwrap(), 14);
    assert_eq!(h.stats().activations, 1);
}

#[tokio::test]
async fn a_caller_dropped_mid_command_ends_the_activation_and_the_queued_hear_it() {
    let s = store();
    let (h, actor) = watched(&s);
    let first = h.dispatch_inline("sku", StockCommand::Restock(4).into());
    assert_eq!(reply(first.await), (4, 1));
    let sent = Arc::new(AtomicUsize::new(0));
    let inline = from_a_task(&h, StockCommand::Reserve(1), Via::Inline, &sent);
    until(|| actor.tasks_of("Reserve(1)").len() == 1).await;
    let behind = from_a_task(&h, StockCommand::Restock(1), Via::Dispatch, &sent);
    until(|| sent.load(Ordering::SeqCst) == 2).await;
    inline.abort();
    assert!(inline.await.unwrap_err().is_cancelled());
    let behind = tokio::time::timeout(Duration::from_secs(10), behind)
        .await
        .expect("the queued command is answered, not left waiting");
    assert!(
        matches!(
            behind.unwrap().0,
            Err(CommandError::Infrastructure(Error::Closed(_)))
        ),
        "a command queued behind a dropped caller is told the actor stopped"
    );
    assert!(!h.is_active("sku"));
    // Nothing of the dropped command was stored; the next command loads the actor again.
    assert_eq!(s.latest_version_of(stock("sku")).await.unwrap(), 1);
    assert_eq!(h.send("sku", StockCommand::Get).await.unwrap(), 4);
    assert_eq!(h.stats().activations, 2);
}

#[tokio::test]
async fn a_panic_in_an_inline_command_is_answered_as_a_stopped_actor() {
    let s = store();
    let (h, actor) = watched(&s);
    let first = h.dispatch_inline("sku", StockCommand::Restock(2).into());
    assert_eq!(reply(first.await), (2, 1));
    actor.gate.add_permits(1);
    let sent = Arc::new(AtomicUsize::new(0));
    let panicking = from_a_task(&h, StockCommand::Reserve(0), Via::Inline, &sent);
    let (outcome, caller) = panicking
        .await
        .expect("the caller's task survives the panic");
    assert!(
        matches!(outcome, Err(CommandError::Infrastructure(Error::Closed(_)))),
        "{outcome:?}"
    );
    assert_eq!(actor.tasks_of("Reserve(0)"), [Some(caller)]);
    assert!(!h.is_active("sku"));
    let next = h.dispatch_inline("sku", StockCommand::Restock(1).into());
    assert_eq!(reply(next.await), (3, 2));
    assert_eq!(h.stats().activations, 2);
}
