//! Least-recently-used order of the active actors, for the cap on active actors.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub(crate) struct Lru {
    tick: u64,
    by_tick: BTreeMap<u64, String>,
    tick_of: HashMap<String, u64>,
}

impl Lru {
    /// Marks `id` as just used.
    pub(crate) fn touch(&mut self, id: &str) {
        self.tick += 1;
        let tick = self.tick;
        match self.tick_of.get_mut(id) {
            Some(t) => {
                self.by_tick.remove(t);
                *t = tick;
            }
            None => {
                self.tick_of.insert(id.to_string(), tick);
            }
        }
        self.by_tick.insert(tick, id.to_string());
    }

    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(t) = self.tick_of.remove(id) {
            self.by_tick.remove(&t);
        }
    }

    /// The least recently used id other than `except`.
    pub(crate) fn oldest_except(&self, except: &str) -> Option<&str> {
        self.by_tick
            .values()
            .map(String::as_str)
            .find(|id| *id != except)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_last_use() {
        let mut l = Lru::default();
        for id in ["a", "b", "c"] {
            l.touch(id);
        }
        l.touch("a");
        assert_eq!(l.oldest_except("x"), Some("b"));
        assert_eq!(l.oldest_except("b"), Some("c"));
        l.remove("b");
        assert_eq!(l.oldest_except("x"), Some("c"));
        l.remove("c");
        l.remove("a");
        assert_eq!(l.oldest_except("x"), None);
        assert!(l.tick_of.is_empty());
    }
}
