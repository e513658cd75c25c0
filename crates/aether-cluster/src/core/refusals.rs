//! Refused membership messages: every one counted, warnings about them rate-limited, so a
//! flood of made-up heartbeats costs neither the log nor the driver.

use std::time::Duration;

use tokio::time::Instant;

use super::{Action, NodeCore, RefusalLog};
use crate::membership::Refusal;

/// At most one warning per this long about refused heartbeats: a flood must not become a
/// flood of log lines. The counter counts every refusal.
pub(super) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How much of a refused id (or decoding error) a warning shows: enough to recognise it,
/// never a whole message.
pub(super) const REFUSAL_SAMPLE_CHARS: usize = 64;

impl NodeCore {
    /// Reports `count` refusals for `reason` with a warning about `what` (a refused id or
    /// error), or, when a warning was asked for less than [`REFUSAL_LOG_EVERY`] ago, keeps
    /// them for the next sweep to report.
    pub(super) fn refused(
        &mut self,
        reason: Refusal,
        count: u64,
        what: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let quiet = self
            .refusal_logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REFUSAL_LOG_EVERY);
        if quiet {
            self.refusal_logged_at = Some(now);
            let unlogged = std::mem::take(&mut self.refusals_unlogged);
            let log = Some(RefusalLog {
                sample: sample(what),
                unlogged,
            });
            actions.push(Action::HeartbeatsRefused { reason, count, log });
        } else {
            self.refusals_unlogged = self.refusals_unlogged.saturating_add(count);
            let pending = self.refusals_pending.entry(reason).or_insert(0);
            *pending = pending.saturating_add(count);
        }
    }

    /// Reports the refusals kept since the last sweep (without a warning).
    pub(super) fn report_pending_refusals(&mut self, actions: &mut Vec<Action>) {
        for (reason, count) in std::mem::take(&mut self.refusals_pending) {
            actions.push(Action::HeartbeatsRefused {
                reason,
                count,
                log: None,
            });
        }
    }
}

/// The first [`REFUSAL_SAMPLE_CHARS`] characters of `text`, marked when cut.
pub(super) fn sample(text: &str) -> String {
    match text.char_indices().nth(REFUSAL_SAMPLE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
