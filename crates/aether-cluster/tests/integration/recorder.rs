//! A `metrics` recorder for tests that read what the nodes count: every counter and gauge by
//! name and labels. Installed once per test process, since a global recorder can be set only
//! once; the metrics carry the cluster's name, so tests on other clusters do not disturb it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

/// A counter or gauge (gauges keep their `f64` bits).
#[derive(Debug, Default)]
struct Cell(AtomicU64);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.set(f64::from_bits(self.0.load(Ordering::Relaxed)) + value);
    }
    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// The values recorded so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorded {
    cells: Arc<Mutex<HashMap<Key, Arc<Cell>>>>,
}

impl Recorded {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(cells.entry(key.clone()).or_default())
    }

    /// The cells named `name` whose labels include every `(key, value)` of `labels`.
    fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<Arc<Cell>> {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        cells
            .iter()
            .filter(|(k, _)| {
                k.name() == name
                    && labels
                        .iter()
                        .all(|(lk, lv)| k.labels().any(|l| l.key() == *lk && l.value() == *lv))
            })
            .map(|(_, c)| Arc::clone(c))
            .collect()
    }

    /// The sum of the counters named `name` with `labels`.
    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(name, labels)
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// The gauge named `name` with `labels` (`None`: never set).
    pub(crate) fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels)
            .first()
            .map(|c| f64::from_bits(c.0.load(Ordering::Relaxed)))
    }

    /// Every label value the counters named `name` carry under `label`.
    pub(crate) fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        let mut values: Vec<String> = cells
            .keys()
            .filter(|k| k.name() == name)
            .flat_map(|k| {
                k.labels()
                    .filter(|l| l.key() == label)
                    .map(|l| l.value().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The process's recorder, installed on first use.
pub(crate) fn recorded() -> Recorded {
    static RECORDED: OnceLock<Recorded> = OnceLock::new();
    RECORDED
        .get_or_init(|| {
            let recorded = Recorded::default();
            metrics::set_global_recorder(recorded.clone())
                .expect("no other metrics recorder in the cluster's integration tests");
            recorded
        })
        .clone()
}
