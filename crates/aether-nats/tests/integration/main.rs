//! The NATS layer against real servers, one binary (so `async-nats` is linked once): a module
//! per area.

mod connect;
mod consumer;
mod kv;
mod violations;
