//! The checker: every rule held against the recorded operations and the final state.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::*;

/// Checks `ops` against `final_state` (see the [module docs](super) for the rules) and returns
/// the figures, or the first violation in [`Rule`] order.
///
/// # Errors
/// The first [`Violation`]; [`check_all`] returns them all.
pub fn check(
    ops: &[Op],
    final_state: &FinalState,
    options: &CheckOptions,
) -> Result<CheckReport, Violation> {
    let (report, violations) = check_all(ops, final_state, options);
    match violations.into_iter().next() {
        Some(v) => Err(v),
        None => Ok(report),
    }
}

/// Checks `ops` against `final_state` and returns the figures and every violation, sorted by
/// [`Rule`], then actor, then first operation.
pub fn check_all(
    ops: &[Op],
    final_state: &FinalState,
    options: &CheckOptions,
) -> (CheckReport, Vec<Violation>) {
    let checker = Checker::new(ops, final_state);
    let mut violations = Vec::new();
    checker.final_order(&mut violations);
    checker.duplicates(&mut violations);
    checker.writes(&mut violations);
    checker.phantoms(&mut violations);
    checker.reads(options, &mut violations);
    violations.sort_by(|a, b| {
        (a.rule, &a.actor, a.ops.first().map(|o| o.index)).cmp(&(
            b.rule,
            &b.actor,
            b.ops.first().map(|o| o.index),
        ))
    });
    (checker.report(), violations)
}

type Position<'a> = (&'a str, u64);

struct Checker<'a> {
    ops: &'a [Op],
    final_state: &'a FinalState,
    /// (actor, version) → stored event id.
    stored: HashMap<Position<'a>, &'a str>,
    /// Event id → every (actor, version) it is stored at.
    stored_at: HashMap<&'a str, Vec<Position<'a>>>,
    /// (actor, version, id) → the write operations that attempted it.
    attempts: HashMap<(&'a str, u64, &'a str), Vec<usize>>,
}

impl<'a> Checker<'a> {
    fn new(ops: &'a [Op], final_state: &'a FinalState) -> Self {
        let mut stored = HashMap::new();
        let mut stored_at: HashMap<&str, Vec<Position<'a>>> = HashMap::new();
        for (actor, events) in &final_state.actors {
            for (v, id) in events {
                stored.entry((actor.as_str(), *v)).or_insert(id.as_str());
                stored_at
                    .entry(id.as_str())
                    .or_default()
                    .push((actor.as_str(), *v));
            }
        }
        let mut attempts: HashMap<_, Vec<usize>> = HashMap::new();
        for (k, op) in ops.iter().enumerate() {
            for event in op.operation.events() {
                attempts.entry(event).or_default().push(k);
            }
        }
        Self {
            ops,
            final_state,
            stored,
            stored_at,
            attempts,
        }
    }

    fn violation(&self, rule: Rule, actor: &str, detail: String, ops: &[usize]) -> Violation {
        let mut ops: Vec<usize> = ops.to_vec();
        ops.sort_unstable();
        ops.dedup();
        Violation {
            rule,
            actor: actor.to_string(),
            detail,
            ops: ops.iter().map(|k| self.ops[*k].clone()).collect(),
        }
    }

    fn is_stored(&self, actor: &str, version: u64, id: &str) -> bool {
        self.stored.get(&(actor, version)) == Some(&id)
    }

    fn attempted_by(&self, actor: &'a str, version: u64, id: &'a str) -> &[usize] {
        self.attempts
            .get(&(actor, version, id))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Positions of the writes that attempted event `id`, anywhere.
    fn writers_of(&self, id: &str) -> Vec<usize> {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.operation.events().any(|(_, _, e)| e == id))
            .map(|(k, _)| k)
            .collect()
    }

    fn final_order(&self, out: &mut Vec<Violation>) {
        for (actor, events) in &self.final_state.actors {
            for pair in events.windows(2) {
                if pair[1].0 <= pair[0].0 {
                    out.push(self.violation(
                        Rule::FinalNotIncreasing,
                        actor,
                        format!(
                            "version {} ({}) is followed by version {} ({})",
                            pair[0].0, pair[0].1, pair[1].0, pair[1].1
                        ),
                        &[],
                    ));
                }
            }
        }
    }

    fn duplicates(&self, out: &mut Vec<Violation>) {
        let mut dups: Vec<_> = self
            .stored_at
            .iter()
            .filter(|(_, at)| at.len() > 1)
            .collect();
        dups.sort();
        for (id, at) in dups {
            let places: Vec<String> = at.iter().map(|(a, v)| format!("{a:?} v{v}")).collect();
            let ops = self.writers_of(id);
            out.push(self.violation(
                Rule::Duplicate,
                at[0].0,
                format!(
                    "event {id} is stored {} times: {}",
                    at.len(),
                    places.join(", ")
                ),
                &ops,
            ));
        }
    }

    fn writes(&self, out: &mut Vec<Violation>) {
        // (actor, version) → (event id, op) of the first acknowledged append claiming it.
        let mut acked: HashMap<Position<'a>, (&str, usize)> = HashMap::new();
        for (k, op) in self.ops.iter().enumerate() {
            if !op.operation.is_write() {
                continue;
            }
            let class = op.outcome.write_class();
            let events: Vec<_> = op.operation.events().collect();
            let Some(&(actor, _, _)) = events.first() else {
                continue;
            };
            if class == WriteClass::Acked {
                for &(a, v, id) in &events {
                    match acked.get(&(a, v)) {
                        Some(&(other_id, other)) if other_id != id => out.push(self.violation(
                            Rule::ConflictingAcks,
                            a,
                            format!("version {v} acknowledged as {other_id} and as {id}"),
                            &[other, k],
                        )),
                        Some(_) => {}
                        None => {
                            acked.insert((a, v), (id, k));
                        }
                    }
                }
            }
            let present: Vec<bool> = events
                .iter()
                .map(|&(a, v, id)| self.is_stored(a, v, id))
                .collect();
            let count = present.iter().filter(|p| **p).count();
            match class {
                WriteClass::Acked | WriteClass::Unknown => {
                    if count > 0 && count < events.len() {
                        let missing: Vec<String> = events
                            .iter()
                            .zip(&present)
                            .filter(|(_, p)| !**p)
                            .map(|((a, v, id), _)| format!("{a:?} v{v} {id}"))
                            .collect();
                        out.push(self.violation(
                            Rule::PartialWrite,
                            actor,
                            format!(
                                "{count} of {} events stored; missing {}{}",
                                events.len(),
                                missing.join(", "),
                                self.found_instead(&events, &present)
                            ),
                            &[k],
                        ));
                    } else if count == 0 && class == WriteClass::Acked {
                        out.push(self.violation(
                            Rule::LostWrite,
                            actor,
                            format!(
                                "none of the {} acknowledged events is stored{}",
                                events.len(),
                                self.found_instead(&events, &present)
                            ),
                            &[k],
                        ));
                    }
                }
                WriteClass::Failed => {
                    for (&(a, v, id), _) in events.iter().zip(&present).filter(|(_, p)| **p) {
                        // The same event may have been written by another attempt (a retry
                        // with the same id) that did not fail.
                        let others: Vec<usize> = self
                            .attempted_by(a, v, id)
                            .iter()
                            .copied()
                            .filter(|w| self.ops[*w].outcome.write_class() != WriteClass::Failed)
                            .collect();
                        if others.is_empty() {
                            out.push(self.violation(
                                Rule::FailedWritePresent,
                                a,
                                format!("event {id} is stored at version {v}"),
                                &[k],
                            ));
                        }
                    }
                }
            }
        }
    }

    /// What the final history holds where the missing events should be, for messages.
    fn found_instead(&self, events: &[(&str, u64, &str)], present: &[bool]) -> String {
        let found: Vec<String> = events
            .iter()
            .zip(present)
            .filter(|(_, p)| !**p)
            .filter_map(|((a, v, id), _)| {
                let here = self.stored.get(&(*a, *v));
                let elsewhere = self.stored_at.get(id);
                match (here, elsewhere) {
                    (Some(other), _) => Some(format!("{a:?} v{v} holds {other}")),
                    (None, Some(at)) => Some(format!("{id} is stored at {at:?}")),
                    (None, None) => None,
                }
            })
            .collect();
        if found.is_empty() {
            String::new()
        } else {
            format!(" (instead: {})", found.join(", "))
        }
    }

    fn phantoms(&self, out: &mut Vec<Violation>) {
        for (actor, events) in &self.final_state.actors {
            for (v, id) in events {
                if !self.attempted_by(actor, *v, id).is_empty() {
                    continue;
                }
                let elsewhere = self.writers_of(id);
                let detail = if elsewhere.is_empty() {
                    format!("event {id} at version {v} was never attempted")
                } else {
                    format!("event {id} is stored at version {v}, where no operation put it")
                };
                out.push(self.violation(Rule::Phantom, actor, detail, &elsewhere));
            }
        }
    }

    fn reads(&self, options: &CheckOptions, out: &mut Vec<Violation>) {
        // Per actor: the earliest invocation of a write attempting each version, by writes
        // that did not fail.
        let mut first_attempt: HashMap<Position<'a>, (Duration, usize)> = HashMap::new();
        // Per actor: (completion, version) of every acknowledged event.
        let mut acked: HashMap<&str, Vec<(Duration, u64, usize)>> = HashMap::new();
        for (k, op) in self.ops.iter().enumerate() {
            let class = op.outcome.write_class();
            if !op.operation.is_write() || class == WriteClass::Failed {
                continue;
            }
            for (a, v, _) in op.operation.events() {
                let entry = first_attempt.entry((a, v)).or_insert((op.invoked, k));
                if op.invoked < entry.0 {
                    *entry = (op.invoked, k);
                }
                if let (WriteClass::Acked, Some(done)) = (class, op.completed) {
                    acked.entry(a).or_default().push((done, v, k));
                }
            }
        }

        // Every answered read and replay, as bounds on the latest version it saw.
        let mut observations: Vec<Observation<'a>> = Vec::new();
        for (k, op) in self.ops.iter().enumerate() {
            let Some(completed) = op.completed else {
                continue;
            };
            match (&op.operation, &op.outcome) {
                (Operation::ReadVersion { actor }, Outcome::Version(r)) => {
                    let r = *r;
                    if r > 0 {
                        match first_attempt.get(&(actor.as_str(), r)) {
                            Some(&(invoked, _)) if invoked < completed => {
                                if !self.stored.contains_key(&(actor.as_str(), r)) {
                                    out.push(self.violation(
                                        Rule::ReadOfLostVersion,
                                        actor,
                                        format!("read version {r}, which is not stored at the end"),
                                        &[k],
                                    ));
                                }
                            }
                            found => out.push(
                                self.violation(
                                    Rule::ReadUnattempted,
                                    actor,
                                    format!(
                                        "read version {r}, which no write that did not fail was \
                                     attempting before the read completed"
                                    ),
                                    &[Some(k), found.map(|f| f.1)]
                                        .into_iter()
                                        .flatten()
                                        .collect::<Vec<_>>(),
                                ),
                            ),
                        }
                    }
                    observations.push(Observation {
                        actor,
                        op,
                        pos: k,
                        completed,
                        lower: r,
                        upper: r,
                    });
                }
                (
                    Operation::Replay {
                        actor,
                        from_version,
                    },
                    Outcome::Events(events),
                ) => {
                    let expected: Vec<&(u64, String)> = self
                        .final_state
                        .actor(actor)
                        .iter()
                        .filter(|(v, _)| v >= from_version)
                        .collect();
                    let prefix = events.len() <= expected.len()
                        && events.iter().zip(&expected).all(|(got, want)| got == *want);
                    if !prefix {
                        let at = events
                            .iter()
                            .zip(&expected)
                            .position(|(got, want)| got != *want)
                            .unwrap_or(expected.len());
                        let show = |e: Option<&(u64, String)>| match e {
                            Some((v, id)) => format!("v{v} {id}"),
                            None => "nothing".to_string(),
                        };
                        out.push(self.violation(
                            Rule::ReplayNotPrefix,
                            actor,
                            format!(
                                "event {} of the replay is {}, the final history has {} there",
                                at + 1,
                                show(events.get(at)),
                                show(expected.get(at).copied()),
                            ),
                            &[k],
                        ));
                    }
                    let (lower, upper) = match events.last() {
                        Some((v, _)) => (*v, *v),
                        // Empty: the latest version was below `from_version`.
                        None => (0, from_version.saturating_sub(1)),
                    };
                    observations.push(Observation {
                        actor,
                        op,
                        pos: k,
                        completed,
                        lower,
                        upper,
                    });
                }
                _ => {}
            }
        }

        if options.monotonic_reads {
            let mut by_client: HashMap<(ClientId, &str), Vec<&Observation<'a>>> = HashMap::new();
            for o in &observations {
                by_client.entry((o.op.client, o.actor)).or_default().push(o);
            }
            for ((client, actor), seen) in by_client {
                let earlier = Frontier::new(seen.iter().map(|o| (o.completed, o.lower, o.pos)));
                for o in &seen {
                    if let Some((before, k)) = earlier.max_before(o.op.invoked) {
                        if o.upper < before {
                            out.push(self.violation(
                                Rule::MonotonicReads,
                                actor,
                                format!("{client} saw version {before}, then at most {}", o.upper),
                                &[k, o.pos],
                            ));
                        }
                    }
                }
            }
        }

        if options.linearizable_reads {
            let mut by_actor: HashMap<&str, Vec<&Observation<'a>>> = HashMap::new();
            for o in &observations {
                by_actor.entry(o.actor).or_default().push(o);
            }
            for (actor, seen) in by_actor {
                let writes = Frontier::new(acked.get(actor).into_iter().flatten().copied());
                let reads = Frontier::new(seen.iter().map(|o| (o.completed, o.lower, o.pos)));
                for o in &seen {
                    if let Some((v, k)) = writes.max_before(o.op.invoked) {
                        if o.upper < v {
                            out.push(self.violation(
                                Rule::StaleRead,
                                actor,
                                format!(
                                    "version {v} was acknowledged before the read began, \
                                     which saw at most {}",
                                    o.upper
                                ),
                                &[k, o.pos],
                            ));
                            continue;
                        }
                    }
                    if let Some((v, k)) = reads.max_before(o.op.invoked) {
                        if o.upper < v {
                            out.push(self.violation(
                                Rule::StaleRead,
                                actor,
                                format!(
                                    "version {v} was read before this read began, which saw \
                                     at most {}",
                                    o.upper
                                ),
                                &[k, o.pos],
                            ));
                        }
                    }
                }
            }
        }
    }

    fn report(&self) -> CheckReport {
        let mut r = CheckReport {
            operations: self.ops.len(),
            stored_events: self.final_state.event_count(),
            ..CheckReport::default()
        };
        let mut actors: HashSet<&str> = self.final_state.actors().collect();
        for op in self.ops {
            match &op.operation {
                Operation::Append(_) | Operation::Transaction(_) => {
                    actors.extend(op.operation.events().map(|(a, _, _)| a));
                    match &op.outcome {
                        Outcome::Unknown => {
                            r.unknown += 1;
                            let mut events = op.operation.events().peekable();
                            if events.peek().is_some()
                                && events.all(|(a, v, id)| self.is_stored(a, v, id))
                            {
                                r.unknown_stored += 1;
                            }
                        }
                        Outcome::Conflict => r.conflicts += 1,
                        Outcome::Error(_) => r.errors += 1,
                        Outcome::Ok | Outcome::Version(_) | Outcome::Events(_) => {
                            r.acknowledged += 1;
                        }
                    }
                }
                Operation::ReadVersion { actor } | Operation::Replay { actor, .. } => {
                    actors.insert(actor);
                    match &op.outcome {
                        Outcome::Version(_) | Outcome::Events(_) | Outcome::Ok => r.reads += 1,
                        _ => r.unanswered_reads += 1,
                    }
                }
            }
        }
        r.actors = actors.len();
        r
    }
}

/// What an answered read or replay says about an actor's latest version when it ran.
struct Observation<'a> {
    actor: &'a str,
    op: &'a Op,
    /// Its position in the ops checked.
    pos: usize,
    completed: Duration,
    /// The latest version was at least this (what a later read must not go below).
    lower: u64,
    /// The latest version was at most this (what an earlier write or read must not exceed).
    upper: u64,
}

/// Points `(time, value, op)`; answers "the largest value at a time before `t`, and whose".
struct Frontier {
    times: Vec<Duration>,
    /// Running maximum of the value, with its op, in time order.
    best: Vec<(u64, usize)>,
}

impl Frontier {
    fn new(points: impl Iterator<Item = (Duration, u64, usize)>) -> Self {
        let mut points: Vec<_> = points.collect();
        points.sort_unstable();
        let mut best: Vec<(u64, usize)> = Vec::with_capacity(points.len());
        for &(_, value, op) in &points {
            let next = match best.last() {
                Some(&(max, k)) if max >= value => (max, k),
                _ => (value, op),
            };
            best.push(next);
        }
        Self {
            times: points.iter().map(|p| p.0).collect(),
            best,
        }
    }

    fn max_before(&self, t: Duration) -> Option<(u64, usize)> {
        let n = self.times.partition_point(|time| *time < t);
        n.checked_sub(1).map(|k| self.best[k])
    }
}
