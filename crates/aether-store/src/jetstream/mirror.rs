//! A standby copy of a store's event streams in another JetStream domain, for disaster
//! recovery: another NATS cluster, joined to the primary's by a leafnode connection, keeps a
//! mirror of each stream, reports how far it lags, and is promoted to the writable primary once
//! the first is gone.
//!
//! - [`create_mirrors`]: on the standby, a mirror of each of the store's streams (every
//!   partition's), with the primary's sequences: positions kept by projections and the
//!   store's concurrency checks mean the same on both.
//! - [`mirror_status`]: what each mirror holds, how many messages it knows it lacks, and how
//!   long ago it last heard from the primary.
//! - [`validate_domain`]: a JetStream domain name, checked before it reaches a subject.
//! - [`promote_mirrors`]: the mirrors become the store's streams (nats-server 2.12 or later,
//!   which lets a stream drop its mirror); a store opened on the standby then writes there.
//!
//! A mirror copies asynchronously: what the primary acknowledged but had not yet sent when it
//! was lost is lost with it. That is the recovery point; `docs/operations.md` states what was
//! measured.
//!
//! ```no_run
//! use aether_store::mirror::{create_mirrors, mirror_status, promote_mirrors, PromoteOptions};
//! use aether_store::JetStreamConfig;
//!
//! # async fn run(standby: async_nats::Client) -> aether_core::Result<()> {
//! let config = JetStreamConfig::default().namespace("orders");
//! // On the standby's server: mirror the streams of the domain "primary".
//! create_mirrors(&standby, &config, "primary").await?;
//! for s in mirror_status(&standby, &config, Some("primary")).await? {
//!     println!("{}: {} messages, {} behind", s.stream, s.last_sequence, s.lag);
//! }
//! // Later, the primary is gone: the standby becomes the store's home.
//! promote_mirrors(&standby, &config, &PromoteOptions::checking("primary")).await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use aether_core::{Error, Result};
use aether_nats::backend::{classify, ensure_stream, get_stream, server_older_than};
use async_nats::jetstream::stream::{self, DiscardPolicy, External, RetentionPolicy, Source};
use async_nats::jetstream::{Context, ContextBuilder};

use super::config::JetStreamConfig;
use super::event_store::JetStreamEventStore;
use super::subject::Subjects;

/// How long a question to the primary may take before it counts as not answering.
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One mirror on the standby, as [`mirror_status`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorStatus {
    /// The stream on the standby (named like the primary's).
    pub stream: String,
    /// Whether the stream still mirrors (`false` once promoted).
    pub mirroring: bool,
    /// The stream sequence of the last message the standby holds (0: none).
    pub last_sequence: u64,
    /// Messages the standby holds.
    pub messages: u64,
    /// Messages the standby knows the primary has and it lacks, as of its last contact.
    pub lag: u64,
    /// Time since the standby last heard from the primary (`None`: never, or promoted).
    pub since_contact: Option<Duration>,
    /// The primary's last sequence, when it was asked and answered.
    pub primary_last_sequence: Option<u64>,
}

/// How [`promote_mirrors`] makes sure the primary is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromoteOptions {
    /// The primary's JetStream domain: when it still answers, the promotion is refused, since
    /// two writable copies of one history would diverge. `None`: not checked.
    pub origin_domain: Option<String>,
    /// Promote even when the primary answers (an operator who has fenced it otherwise, say).
    pub even_if_primary_answers: bool,
}

impl PromoteOptions {
    /// Options that check that the primary in `origin_domain` no longer answers.
    pub fn checking(origin_domain: impl Into<String>) -> Self {
        Self {
            origin_domain: Some(origin_domain.into()),
            even_if_primary_answers: false,
        }
    }
}

/// The standby's JetStream context for `config` (its domain and request timeout).
fn standby_context(client: &async_nats::Client, config: &JetStreamConfig) -> Context {
    let builder = ContextBuilder::new();
    let builder = match config.request_timeout {
        Some(timeout) => builder.timeout(timeout),
        None => builder,
    };
    match &config.domain {
        Some(domain) => builder.domain(domain.clone()).build(client.clone()),
        None => builder.build(client.clone()),
    }
}

/// The primary's JetStream context, reached through `client` under its domain.
fn origin_context(client: &async_nats::Client, origin_domain: &str) -> Context {
    ContextBuilder::new()
        .timeout(ORIGIN_TIMEOUT)
        .domain(origin_domain)
        .build(client.clone())
}

/// Checks a JetStream domain name: letters, digits, `-` and `_` (it becomes a subject token).
///
/// # Errors
/// [`Error::InvalidInput`] otherwise.
pub fn validate_domain(origin_domain: &str) -> Result<()> {
    let valid = !origin_domain.is_empty()
        && origin_domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "JetStream domain {origin_domain:?} must be letters, digits, '-' and '_'"
        )))
    }
}

/// Creates, on the standby `client` is connected to (in `config.domain`, when set), a mirror of
/// each stream the store configured by `config` uses, reading from the JetStream domain
/// `origin_domain`. A mirror that already exists for that stream is kept (the call can be
/// repeated); it is the primary's settings (description, age limit) that the mirror copies,
/// and `config`'s storage and replicas that it is kept with.
///
/// # Errors
/// [`Error::InvalidInput`] for a malformed domain, or when a stream of that name exists on the
/// standby and is not a mirror of the primary's; [`Error::NotFound`] when the primary has no
/// such stream; [`Error::Unavailable`] when either side does not answer.
pub async fn create_mirrors(
    client: &async_nats::Client,
    config: &JetStreamConfig,
    origin_domain: &str,
) -> Result<Vec<MirrorStatus>> {
    validate_domain(origin_domain)?;
    let standby = standby_context(client, config);
    let origin = origin_context(client, origin_domain);
    for name in JetStreamEventStore::stream_names_for(config) {
        let origin_config = match get_stream(&origin, &name).await? {
            Some(mut s) => s
                .info()
                .await
                .map_err(|e| classify(format!("reading stream {name} of the primary"), e))?
                .config
                .clone(),
            None => {
                return Err(Error::NotFound(format!(
                    "the primary (JetStream domain {origin_domain}) has no stream {name}"
                )))
            }
        };
        if let Some(mut existing) = get_stream(&standby, &name).await? {
            let info = existing
                .info()
                .await
                .map_err(|e| classify(format!("reading stream {name}"), e))?;
            let mirrors_it = info.config.mirror.as_ref().is_some_and(|m| m.name == name);
            if !mirrors_it {
                return Err(Error::invalid(format!(
                    "stream {name} exists on the standby and is not a mirror of the primary's; \
                     remove it or use another server"
                )));
            }
            continue;
        }
        let desired = stream::Config {
            name: name.clone(),
            description: origin_config.description.clone(),
            // A mirror takes no publishes of its own: the primary's messages only.
            subjects: Vec::new(),
            mirror: Some(Source {
                name: name.clone(),
                external: Some(External {
                    api_prefix: format!("$JS.{origin_domain}.API"),
                    delivery_prefix: None,
                }),
                ..Default::default()
            }),
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            max_age: origin_config.max_age,
            storage: aether_nats::backend::storage_type(config.storage),
            num_replicas: config.replica_count(),
            allow_direct: true,
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        };
        ensure_stream(&standby, desired).await?;
        tracing::info!(stream = %name, origin_domain, "created a mirror of the primary's stream");
    }
    mirror_status(client, config, Some(origin_domain)).await
}

/// Each of the store's streams on the standby: what it holds and how far behind the primary it
/// is. With `origin_domain`, the primary is asked for its last sequence too (left `None` when
/// it does not answer within two seconds: the usual case once it is gone).
///
/// # Errors
/// [`Error::NotFound`] when a stream is missing on the standby; [`Error::Unavailable`] when the
/// standby does not answer.
pub async fn mirror_status(
    client: &async_nats::Client,
    config: &JetStreamConfig,
    origin_domain: Option<&str>,
) -> Result<Vec<MirrorStatus>> {
    if let Some(d) = origin_domain {
        validate_domain(d)?;
    }
    let standby = standby_context(client, config);
    let origin = origin_domain.map(|d| origin_context(client, d));
    let mut statuses = Vec::new();
    for name in JetStreamEventStore::stream_names_for(config) {
        let Some(mut s) = get_stream(&standby, &name).await? else {
            return Err(Error::NotFound(format!(
                "stream {name} does not exist on the standby"
            )));
        };
        let info = s
            .info()
            .await
            .map_err(|e| classify(format!("reading stream {name}"), e))?;
        let primary_last_sequence = match &origin {
            Some(o) => primary_last_sequence(o, &name).await,
            None => None,
        };
        statuses.push(MirrorStatus {
            stream: name,
            mirroring: info.config.mirror.is_some(),
            last_sequence: info.state.last_sequence,
            messages: info.state.messages,
            lag: info.mirror.as_ref().map_or(0, |m| m.lag),
            since_contact: info.mirror.as_ref().and_then(|m| m.active),
            primary_last_sequence,
        });
    }
    Ok(statuses)
}

/// The primary's last sequence of stream `name`, or `None` when it does not answer in time.
async fn primary_last_sequence(origin: &Context, name: &str) -> Option<u64> {
    let asked = async {
        let mut s = origin.get_stream(name).await.ok()?;
        s.info().await.ok().map(|i| i.state.last_sequence)
    };
    tokio::time::timeout(ORIGIN_TIMEOUT, asked).await.ok()?
}

/// Turns the standby's mirrors of the store's streams into the store's streams: each drops its
/// mirror and captures the store's subjects, keeping every message and sequence. A store
/// opened with `config` on the standby then reads and writes there; an actor's next save is
/// checked against the last message the mirror received, as it would have been on the
/// primary. Streams already promoted are left as they are, so an interrupted promotion can be
/// run again.
///
/// Writes the primary acknowledged and had not sent to the standby are lost: see the lag
/// [`mirror_status`] reports.
///
/// # Errors
/// [`Error::Unsupported`] on servers before nats-server 2.12 (a mirror cannot be promoted
/// there); [`Error::InvalidInput`] when the primary still answers and
/// [`PromoteOptions::even_if_primary_answers`] is not set; [`Error::NotFound`] when a stream is
/// missing on the standby; [`Error::Unavailable`] when the standby does not answer.
pub async fn promote_mirrors(
    client: &async_nats::Client,
    config: &JetStreamConfig,
    options: &PromoteOptions,
) -> Result<Vec<MirrorStatus>> {
    let version = client.server_info().version;
    if server_older_than(&version, 2, 12) {
        return Err(Error::unsupported(
            "promoting a mirror to a writable stream",
            format!(
                "nats-server {version} cannot remove a stream's mirror; 2.12 or later can (on an \
                 older server, restore a backup of the standby into new streams instead)"
            ),
        ));
    }
    let names = JetStreamEventStore::stream_names_for(config);
    if let Some(domain) = &options.origin_domain {
        validate_domain(domain)?;
        if !options.even_if_primary_answers {
            let origin = origin_context(client, domain);
            for name in &names {
                if let Some(seq) = primary_last_sequence(&origin, name).await {
                    return Err(Error::invalid(format!(
                        "the primary (JetStream domain {domain}) still answers for stream {name} \
                         (last sequence {seq}): promoting now would make two writable copies of \
                         one history; stop the primary first, or promote even if it answers"
                    )));
                }
            }
        }
    }
    let standby = standby_context(client, config);
    for name in &names {
        let Some(mut s) = get_stream(&standby, name).await? else {
            return Err(Error::NotFound(format!(
                "stream {name} does not exist on the standby"
            )));
        };
        let info = s
            .info()
            .await
            .map_err(|e| classify(format!("reading stream {name}"), e))?;
        if info.config.mirror.is_none() {
            continue;
        }
        let lag = info.mirror.as_ref().map_or(0, |m| m.lag);
        let mut promoted = info.config.clone();
        promoted.mirror = None;
        promoted.subjects = Subjects::new(name, config.legacy_actor_type.clone()).stream_subjects();
        // Transactions, as on the primary (2.12 and later, which a promotion needs anyway).
        promoted.allow_atomic_publish = true;
        standby
            .update_stream(&promoted)
            .await
            .map_err(|e| classify(format!("promoting the mirror {name}"), e))?;
        tracing::warn!(
            stream = %name,
            last_sequence = info.state.last_sequence,
            lag,
            "promoted a mirror to the store's stream"
        );
    }
    mirror_status(client, config, None).await
}
