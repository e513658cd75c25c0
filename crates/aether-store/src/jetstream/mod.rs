//! The JetStream event store (feature `jetstream`).
