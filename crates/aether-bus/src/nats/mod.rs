//! The NATS event bus (feature `nats`).
