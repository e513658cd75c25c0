//! The names projections keep their state under: one place that writes and reads them.

use std::fmt;

/// The name a projection's state (checkpoint, parked events, reported status, a sink's
/// position) is kept under, and what it says:
///
/// | name | what |
/// |---|---|
/// | `<projection>` | a projection of a log that is one order |
/// | `<projection>.p<k>` | shard `k` of a partitioned projection ([`ProjectionWorker`](crate::ProjectionWorker)) |
/// | `<projection>.l<l>` | log partition `l` of a projection of a partitioned log |
/// | `<projection>.l<l>.p<k>` | shard `k` of log partition `l` (a worker's unit) |
///
/// Projection names hold no `.`, so the parts after the first `.` are these suffixes; numbers
/// are written in plain decimal (no sign, no leading zero), and [`parse`](Self::parse) accepts
/// only that.
///
/// ```
/// use aether_projection::CheckpointName;
///
/// let name = CheckpointName::parse("balances.l2.p3").expect("a checkpoint name");
/// assert_eq!((name.projection, name.log_partition, name.shard), ("balances", Some(2), Some(3)));
/// assert_eq!(name.to_string(), "balances.l2.p3");
/// assert_eq!(CheckpointName::parse("balances").map(|n| n.log_partition), Some(None));
/// assert!(CheckpointName::parse("balances.l02").is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointName<'a> {
    /// The projection's name.
    pub projection: &'a str,
    /// The log partition, on a partitioned log.
    pub log_partition: Option<u32>,
    /// The shard of a partitioned projection.
    pub shard: Option<u32>,
}

impl<'a> CheckpointName<'a> {
    /// The name of `projection`'s state for `log_partition` (when the log is partitioned) and
    /// `shard` (in a partitioned projection).
    pub fn new(projection: &'a str, log_partition: Option<u32>, shard: Option<u32>) -> Self {
        Self {
            projection,
            log_partition,
            shard,
        }
    }

    /// Reads a name written by [`Display`](fmt::Display); `None` for anything else.
    pub fn parse(name: &'a str) -> Option<Self> {
        let mut parts = name.split('.');
        let projection = parts.next().filter(|p| !p.is_empty())?;
        let mut out = Self::new(projection, None, None);
        let mut next = parts.next();
        if let Some(l) = next.and_then(|p| p.strip_prefix('l')) {
            out.log_partition = Some(number(l)?);
            next = parts.next();
        }
        if let Some(part) = next {
            out.shard = Some(number(part.strip_prefix('p')?)?);
        }
        parts.next().is_none().then_some(out)
    }
}

/// A number as the names write it: decimal digits, no sign, no leading zero.
fn number(digits: &str) -> Option<u32> {
    let plain = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    plain.then(|| digits.parse().ok()).flatten()
}

impl fmt::Display for CheckpointName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.projection)?;
        if let Some(l) = self.log_partition {
            write!(f, ".l{l}")?;
        }
        if let Some(k) = self.shard {
            write!(f, ".p{k}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_round_trips() {
        for (l, k) in [
            (None, None),
            (None, Some(3)),
            (Some(2), None),
            (Some(12), Some(0)),
        ] {
            let name = CheckpointName::new("orders", l, k).to_string();
            assert_eq!(
                CheckpointName::parse(&name),
                Some(CheckpointName::new("orders", l, k))
            );
        }
    }

    #[test]
    fn anything_else_is_not_a_name() {
        for bad in [
            "",
            ".p1",
            "o.p",
            "o.l",
            "o.p01",
            "o.l-1",
            "o.l+1",
            "o.x1",
            "o.p1.l2",
            "o.l1.p2.p3",
            "o.l1.l2",
            "o.p1x",
            "o.l99999999999",
        ] {
            assert_eq!(CheckpointName::parse(bad), None, "{bad}");
        }
    }
}
