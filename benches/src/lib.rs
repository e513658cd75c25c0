//! Benchmarks for Aether. Each criterion group measures an Aether operation next to its floor
//! (the raw NATS call it wraps) or its peer (another crate doing the same job), so the ratio
//! holds on a noisy shared machine. `scripts/bench` runs them all and writes
//! `docs/benchmarks.md` with `bench-report`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
