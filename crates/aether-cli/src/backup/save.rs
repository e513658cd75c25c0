//! `aether backup`: the namespace's buckets, then its event streams, written message by
//! message to `<DIR>.partial`, renamed to `<DIR>` once complete and removed on failure or
//! Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aether_nats::backend::{consumer_error, get_stream};
use aether_projection::DEFAULT_PROJECTION_BUCKET;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::{self, stream::Stream};
use clap::Args;
use futures::StreamExt;

use super::{
    file_name, is_deletion, BucketEntry, DataFile, Direction, HashingWriter, Manifest, Record,
    StreamEntry, Summary, FORMAT_VERSION, MANIFEST,
};
use crate::connect::{jetstream_hint, ConnectArgs};
use crate::error::{CliError, CliResult};
use crate::events::{find_streams, StreamArgs};
use crate::output::progress;

/// How long a read waits for the next message before giving up.
const STALL: Duration = Duration::from_secs(10);
/// Messages asked for at once: what the server can make a backup hold in memory is this many
/// messages of its largest payload.
const READ_BATCH: i64 = 32;

/// Arguments of `aether backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The directory to write the backup to: created, refused when it exists and is not
    /// empty. It appears only once the backup is complete.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A key-value bucket to back up with the streams (repeat for several); without it, the
    /// projections bucket when it exists.
    #[arg(long = "bucket", value_name = "NAME")]
    pub buckets: Vec<String>,
    /// Back up the event streams only.
    #[arg(long, conflicts_with = "buckets")]
    pub no_buckets: bool,
    /// The event stream.
    #[command(flatten)]
    pub stream: StreamArgs,
    /// The connection.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `aether backup`, printing its summary.
///
/// # Errors
/// A target directory that exists and is not empty, connection failures, no store's streams,
/// a bucket named with `--bucket` that does not exist, a read that stalled, a failed write,
/// Ctrl-C; the partial backup is removed each time.
pub async fn run(args: BackupArgs) -> CliResult<()> {
    let started = Instant::now();
    let out = args.out.clone();
    // Polled first, the signal handler is in place before the partial directory exists; when
    // it fires, the work is dropped and with it the partial directory.
    let summary = tokio::select! {
        biased;
        () = crate::cleanup::interrupted() => Err(CliError::new(format!(
            "interrupted: the partial backup was removed, nothing was written to {}",
            out.display()
        ))),
        r = write(&args, started) => r,
    }?;
    println!("{summary}");
    Ok(())
}

/// The partial backup directory, removed when dropped unless kept.
struct Partial {
    path: PathBuf,
    keep: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Checks the target and makes the partial directory beside it.
fn prepare(out: &Path) -> CliResult<Partial> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CliError::new(format!(
                    "{} exists and is not empty: back up into a new directory",
                    out.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) if out.exists() => {
            return Err(CliError::new(format!(
                "{} exists and is not a directory",
                out.display()
            )))
        }
        Err(e) => return Err(CliError::new(format!("cannot read {}: {e}", out.display()))),
    }
    let Some(name) = out.file_name() else {
        return Err(CliError::new(format!(
            "--out {} does not name a directory",
            out.display()
        )));
    };
    let mut partial_name = name.to_os_string();
    partial_name.push(".partial");
    let path = out.with_file_name(partial_name);
    if path.exists() {
        return Err(CliError::new(format!(
            "{} exists (left by a backup that could not clean up?): remove it first",
            path.display()
        )));
    }
    std::fs::create_dir(&path)
        .map_err(|e| CliError::new(format!("cannot create {}: {e}", path.display())))?;
    let partial = Partial { path, keep: false };
    for sub in ["streams", "buckets"] {
        let dir = partial.path.join(sub);
        std::fs::create_dir(&dir)
            .map_err(|e| CliError::new(format!("cannot create {}: {e}", dir.display())))?;
    }
    Ok(partial)
}

async fn write(args: &BackupArgs, started: Instant) -> CliResult<Summary> {
    let mut partial = prepare(&args.out)?;
    let manifest = collect(args, &partial.path).await.map_err(|e| {
        CliError::new(format!(
            "{e} (the partial backup was removed, nothing was written to {})",
            args.out.display()
        ))
    })?;
    let manifest_path = partial.path.join(MANIFEST);
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| CliError::new(format!("cannot write the manifest: {e}")))?;
    write_synced(&manifest_path, &text)
        .map_err(|e| CliError::new(format!("cannot write {}: {e}", manifest_path.display())))?;
    // An empty target (allowed) makes way for the complete backup.
    if args.out.is_dir() {
        std::fs::remove_dir(&args.out)
            .map_err(|e| CliError::new(format!("cannot replace {}: {e}", args.out.display())))?;
    }
    std::fs::rename(&partial.path, &args.out).map_err(|e| {
        CliError::new(format!(
            "cannot rename {} to {}: {e}",
            partial.path.display(),
            args.out.display()
        ))
    })?;
    partial.keep = true;
    Ok(Summary::of(
        Direction::Backup,
        &args.out,
        &manifest,
        started.elapsed(),
    ))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Backs up the buckets, then the streams, into `dir`, and says what it wrote.
async fn collect(args: &BackupArgs, dir: &Path) -> CliResult<Manifest> {
    let client = args.connect.connect().await?;
    let context = jetstream::new(client.clone());
    let streams = find_streams(&context, &args.stream).await?;
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let server_version = client.server_info().version;

    // Buckets first: a checkpoint read before the stream points at or before its end.
    let wanted: Vec<(String, bool)> = if args.no_buckets {
        Vec::new()
    } else if args.buckets.is_empty() {
        vec![(DEFAULT_PROJECTION_BUCKET.to_string(), false)]
    } else {
        args.buckets.iter().map(|b| (b.clone(), true)).collect()
    };
    let mut buckets = Vec::new();
    for (index, (name, required)) in wanted.into_iter().enumerate() {
        let stream_name = format!("KV_{name}");
        match get_stream(&context, &stream_name).await? {
            Some(stream) => buckets.push(save_bucket(stream, &name, dir, index).await?),
            None if required => {
                return Err(CliError::new(format!(
                    "bucket {} does not exist",
                    crate::output::escape(&name)
                )))
            }
            None => {}
        }
    }

    let mut entries = Vec::new();
    for (index, stream) in streams.streams.iter().enumerate() {
        entries.push(save_stream(stream.clone(), dir, index).await?);
    }
    Ok(Manifest {
        format: FORMAT_VERSION,
        created,
        server_version,
        namespace: args.stream.namespace.clone(),
        stream_base: streams.base.clone(),
        partitions: streams.partitions(),
        streams: entries,
        buckets,
    })
}

/// What one read of a stream wrote.
struct Copied {
    first: Option<u64>,
    last: Option<u64>,
    count: u64,
    file: DataFile,
}

/// What to read from a stream.
struct Read {
    /// The subjects (every one when empty).
    filter: String,
    /// Where to start: every message, or a bucket's last value per key.
    policy: DeliverPolicy,
    /// The last sequence to copy (`None`: until nothing is pending).
    last: Option<u64>,
    /// Messages expected, for the progress bar (none: nothing is read).
    expected: u64,
    /// Leave out a bucket's delete and purge markers.
    skip_deletions: bool,
}

/// Writes the messages `read` selects to `rel` under `dir`, one at a time.
async fn copy(stream: &Stream, read: Read, dir: &Path, rel: String) -> CliResult<Copied> {
    let Read {
        filter,
        policy,
        last,
        expected,
        skip_deletions,
    } = read;
    let name = stream.cached_info().config.name.clone();
    let what = format!("backing up stream {name}");
    let path = dir.join(&rel);
    let io = |e: std::io::Error| CliError::new(format!("cannot write {}: {e}", path.display()));
    let mut out = HashingWriter::create(&path).map_err(io)?;
    let mut copied = (None, None, 0u64);
    if expected > 0 {
        let bar = progress(expected, &crate::output::escape(&name));
        let config = pull::OrderedConfig {
            deliver_policy: policy,
            filter_subject: filter,
            description: Some("aether backup".into()),
            max_batch: READ_BATCH,
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| CliError::from(consumer_error(&what, e)))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| jetstream_hint(&what, &e))?;
        loop {
            let next = tokio::time::timeout(STALL, messages.next())
                .await
                .map_err(|_| {
                    CliError::new(format!("{what}: no message for {}s", STALL.as_secs()))
                })?;
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(jetstream_hint(&what, &e)),
                None => return Err(CliError::new(format!("{what}: the read ended early"))),
            };
            let info = message
                .info()
                .map_err(|e| CliError::new(format!("{what}: {e}")))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            if last.is_some_and(|l| seq > l) {
                break;
            }
            if !(skip_deletions && is_deletion(message.headers.as_ref())) {
                let record = Record::new(
                    seq,
                    message.subject.as_str(),
                    info,
                    message.headers.as_ref(),
                    &message.payload,
                );
                out.line(&record).map_err(io)?;
                copied.0.get_or_insert(seq);
                copied.1 = Some(seq);
                copied.2 += 1;
            }
            bar.inc(1);
            if last.is_some_and(|l| seq >= l) || pending == 0 {
                break;
            }
        }
        bar.finish_and_clear();
    }
    let file = out.finish(rel).map_err(io)?;
    Ok(Copied {
        first: copied.0,
        last: copied.1,
        count: copied.2,
        file,
    })
}

async fn save_stream(mut stream: Stream, dir: &Path, index: usize) -> CliResult<StreamEntry> {
    let name = stream.cached_info().config.name.clone();
    let info = stream
        .info()
        .await
        .map_err(|e| jetstream_hint(&format!("reading stream {name}"), &e))?
        .clone();
    // The end of the copy: what the stream held when its copy began.
    let end = info.state.last_sequence;
    let expected = info.state.messages;
    let read = Read {
        filter: String::new(),
        policy: DeliverPolicy::All,
        last: Some(end),
        expected,
        skip_deletions: false,
    };
    let copied = copy(&stream, read, dir, file_name("streams", index, &name)).await?;
    let first_seq = copied.first.unwrap_or_else(|| end.saturating_add(1));
    let last_seq = copied.last.unwrap_or(first_seq.saturating_sub(1));
    if last_seq.saturating_add(1).saturating_sub(first_seq) != copied.count {
        eprintln!(
            "warning: stream {} has gaps between sequences {first_seq} and {last_seq}: it cannot be restored with the same sequences",
            crate::output::escape(&name)
        );
    }
    Ok(StreamEntry {
        name,
        config: info.config,
        first_seq,
        last_seq,
        messages: copied.count,
        file: copied.file,
    })
}

async fn save_bucket(
    mut stream: Stream,
    bucket: &str,
    dir: &Path,
    index: usize,
) -> CliResult<BucketEntry> {
    let info = stream
        .info()
        .await
        .map_err(|e| jetstream_hint(&format!("reading bucket {bucket}"), &e))?
        .clone();
    let read = Read {
        filter: format!("$KV.{bucket}.>"),
        policy: DeliverPolicy::LastPerSubject,
        last: None,
        expected: info.state.messages,
        skip_deletions: true,
    };
    let copied = copy(&stream, read, dir, file_name("buckets", index, bucket)).await?;
    Ok(BucketEntry {
        name: bucket.to_string(),
        config: info.config,
        keys: copied.count,
        file: copied.file,
    })
}
