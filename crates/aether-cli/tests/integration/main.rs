//! The `aether` binary's integration tests, in one binary so that the suite links
//! `async-nats` once.
//!
//! - `actor_types`: actor types in `events`, `stats`, the dashboard, and tails of the store.
//! - `backup`: `backup` and `restore`, under write load, with bad input, interrupted.
//! - `cli`: without a server (help, usage errors, the in-process demo, connection failures).
//! - `erase`: `erase` of a data subject, refused, done, interrupted by SIGKILL and finished;
//!   `events`, `tail --source store` and the dashboard showing its fields as erased.
//! - `history`: `history compact|remove-retired` on compactable and other streams, dry runs,
//!   refusals, `events` reading across the cut, bad input refused before connecting.
//! - `mirror`: `mirror create|status|promote` across two servers joined by a leafnode.
//! - `nats`: against real nats-servers started by each test.
//! - `repartition`: `repartition` over more and fewer partitions, and its refusals.
//! - `retire`: `actors retire`, refused without `--yes` and for bad input, then enforced.
//! - `partitions`: every command and the dashboard over a partitioned store.
//! - `timers`: `aether timers` against real nats-servers.
//! - `serve`: a dashboard on a free port and plain HTTP requests to it (shared with
//!   `tests/metrics.rs`, the `/metrics` test in a binary of its own).
//! - `ui`: the dashboard, in a headless browser and over plain HTTP.
//! - `ui_hostile`: the dashboard under careless and hostile clients.

mod actor_types;
mod backup;
mod cli;
mod erase;
mod history;
mod mirror;
mod nats;
mod partitions;
mod repartition;
mod retire;
mod serve;
mod timers;
mod ui;
mod ui_hostile;
