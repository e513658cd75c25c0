//! What the host keeps of one active actor: its mailbox and, between commands, its state.
//!
//! An idle actor has no task: its state waits here, and a task (`activation::run_actor`)
//! exists only while commands are queued or a passivation is under way. Most actors are idle
//! most of the time, so this is most of what an active actor costs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Semaphore, TryAcquireError};

use super::activation::Loaded;
use super::Request;
use crate::actor::Actor;

/// One active actor, shared by the host's map, its senders and its runner.
pub(crate) struct Slot<A: Actor> {
    pub(crate) id: Arc<str>,
    pub(crate) generation: u64,
    /// Free places in the mailbox: a sender takes one before queueing and waits (in arrival
    /// order) while there is none; the runner gives it back when it takes the command out.
    /// Closed when the activation ends, which sends waiting senders to the next one.
    room: Semaphore,
    inner: Mutex<Inner<A>>,
}

struct Inner<A: Actor> {
    /// Requests are boxed so that the queue's buffer stays a few pointers long.
    queue: VecDeque<Box<Request<A>>>,
    /// The state while no runner holds it.
    loaded: Option<Loaded<A::State>>,
    /// A runner task is draining the queue (or passivating the actor).
    running: bool,
    /// Passivation was asked for: the runner ends the activation after its current command.
    stopping: bool,
    /// The activation has ended: nothing more is queued here.
    closed: bool,
    /// Sweeps of the idle sweeper since the actor last finished a command.
    idle_sweeps: u32,
}

/// What [`Slot::push`] did with a request.
pub(crate) enum Pushed<A: Actor> {
    /// Queued; a runner must be started for it.
    Start,
    /// Queued for the runner already draining the queue.
    Queued,
    /// The activation ended before the request could be queued.
    Closed(Box<Request<A>>),
}

/// What [`Slot::stop`] did.
pub(crate) enum Stopped {
    /// Asked the actor to passivate; a runner must be started to do it.
    Start,
    /// Asked the runner draining the queue to passivate the actor.
    Asked,
    /// The actor was already passivating.
    Already,
}

impl<A: Actor> Slot<A> {
    pub(crate) fn new(id: Arc<str>, generation: u64, capacity: usize) -> Self {
        Self {
            id,
            generation,
            room: Semaphore::new(capacity.clamp(1, Semaphore::MAX_PERMITS)),
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                loaded: None,
                running: false,
                stopping: false,
                closed: false,
                idle_sweeps: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<A>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `request`, waiting while the mailbox is full.
    pub(crate) async fn push(&self, request: Box<Request<A>>) -> Pushed<A> {
        // A permit is handed back by the runner when it takes the command out of the queue.
        // Taken without a wait when there is room (and no sender waiting for it).
        match self.room.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) => match self.room.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return Pushed::Closed(request),
            },
            Err(TryAcquireError::Closed) => return Pushed::Closed(request),
        }
        let mut inner = self.lock();
        if inner.closed {
            return Pushed::Closed(request);
        }
        inner.queue.push_back(request);
        if inner.running {
            Pushed::Queued
        } else {
            inner.running = true;
            Pushed::Start
        }
    }

    /// What the runner holding `loaded` does next. A runner starts with no state and takes
    /// the one left here. When the queue is empty it keeps the state if it may `wait`, else
    /// it puts it back and must end.
    pub(crate) fn next(&self, loaded: &mut Option<Loaded<A::State>>, wait: bool) -> Next<A> {
        let mut inner = self.lock();
        if loaded.is_none() {
            *loaded = inner.loaded.take();
        }
        if inner.stopping {
            return Next::Passivate;
        }
        match inner.queue.pop_front() {
            Some(request) => {
                drop(inner);
                self.room.add_permits(1);
                Next::Handle(request)
            }
            None if wait => Next::Empty,
            None => {
                inner.loaded = loaded.take();
                inner.running = false;
                inner.idle_sweeps = 0;
                Next::Idle
            }
        }
    }

    /// Puts the state a runner holds back here. Returns whether a runner is still needed
    /// (commands are queued, or a passivation was asked for): the caller must then start
    /// one, which takes the state from here. Otherwise the actor is idle.
    pub(crate) fn hand_back(&self, loaded: &mut Option<Loaded<A::State>>) -> bool {
        let mut inner = self.lock();
        inner.loaded = loaded.take();
        if inner.queue.is_empty() && !inner.stopping {
            inner.running = false;
            inner.idle_sweeps = 0;
            false
        } else {
            true
        }
    }

    /// Counts one sweep of the idle sweeper; whether the actor has now been idle for more
    /// than `sweeps` of them (a busy or passivating actor never is).
    pub(crate) fn idle_for(&self, sweeps: u32) -> bool {
        let mut inner = self.lock();
        if inner.running || inner.stopping || inner.closed {
            return false;
        }
        inner.idle_sweeps = inner.idle_sweeps.saturating_add(1);
        inner.idle_sweeps > sweeps
    }

    /// Asks the actor to passivate.
    pub(crate) fn stop(&self) -> Stopped {
        let mut inner = self.lock();
        if inner.stopping || inner.closed {
            return Stopped::Already;
        }
        inner.stopping = true;
        if inner.running {
            Stopped::Asked
        } else {
            inner.running = true;
            Stopped::Start
        }
    }

    /// Ends the activation here: nothing more is queued, and waiting senders go to the next
    /// activation. Returns the requests still queued.
    pub(crate) fn close(&self) -> VecDeque<Box<Request<A>>> {
        let queued = {
            let mut inner = self.lock();
            inner.closed = true;
            std::mem::take(&mut inner.queue)
        };
        self.room.close();
        queued
    }
}

/// What the runner does next.
pub(crate) enum Next<A: Actor> {
    Handle(Box<Request<A>>),
    Passivate,
    /// Nothing queued: look once more before going idle.
    Empty,
    Idle,
}
