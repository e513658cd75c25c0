//! `aether restore`: checks the whole backup, refuses a server that already has any of its
//! streams or buckets, then recreates them message by message at their saved sequences;
//! on failure or Ctrl-C, deletes what it created.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use aether_nats::backend::{get_stream, server_older_than};
use async_nats::jetstream::context::{CreateStreamErrorKind, PublishAckFuture};
use async_nats::jetstream::stream::Config;
use async_nats::jetstream::{self, Context};
use clap::Args;

use super::{plural, Direction, Summary};
use super::{read_manifest, DataFile, LineReader, Manifest};
use crate::cleanup::{interrupted, remove_streams};
use crate::connect::{jetstream_hint, refusals_fail, ConnectArgs};
use crate::error::{CliError, CliResult};
use crate::output::{escape, progress};

/// Messages published ahead of their acknowledgements.
const IN_FLIGHT: usize = 256;

/// Arguments of `aether restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup directory, as `aether backup` wrote it.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Only check the backup (its manifest, every file's size and checksum, every line) and
    /// say what it holds, without connecting to a server.
    #[arg(long)]
    pub check: bool,
    /// The connection (to a server without the backup's streams and buckets).
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Runs `aether restore`, printing its summary.
///
/// # Errors
/// A missing or corrupt backup, connection failures, a server that has any of the backup's
/// streams or buckets (nothing is written then), a server that cannot start a stream at a
/// sequence, a message not stored at its saved sequence, Ctrl-C; what was created is deleted.
pub async fn run(args: RestoreArgs) -> CliResult<()> {
    let started = Instant::now();
    let manifest = read_manifest(&args.from)?;
    let dir = args.from.clone();
    let checked = manifest.clone();
    tokio::task::spawn_blocking(move || verify(&dir, &checked))
        .await
        .map_err(|e| CliError::new(format!("checking the backup: {e}")))??;
    if args.check {
        println!(
            "backup {} is complete: {} stream{} ({} messages) and {} bucket{} ({} keys) of {}, \
             taken {} from nats-server {}",
            escape(&args.from.display().to_string()),
            manifest.streams.len(),
            plural(manifest.streams.len()),
            manifest.streams.iter().map(|s| s.messages).sum::<u64>(),
            manifest.buckets.len(),
            plural(manifest.buckets.len()),
            manifest.buckets.iter().map(|b| b.keys).sum::<u64>(),
            escape(&manifest.stream_base),
            escape(&manifest.created),
            escape(&manifest.server_version),
        );
        return Ok(());
    }

    let client = args.connect.connect().await?;
    let context = jetstream::new(client.clone());
    let version = client.server_info().version;
    // A request the server refuses is never answered: each phase fails as soon as the server
    // reports a refusal, and a refusal while writing is cleaned up like any failure.
    let watch = args.connect.permissions().clone();
    refusals_fail(&watch, async {
        for name in targets(&manifest) {
            if get_stream(&context, &name).await?.is_some() {
                return Err(CliError::new(format!(
                    "stream {} already exists on the server: restore only into a server \
                     without the backup's streams and buckets (nothing was written)",
                    escape(&name)
                )));
            }
        }
        Ok(())
    })
    .await?;

    let created = Mutex::new(Vec::new());
    let outcome = tokio::select! {
        biased;
        () = interrupted() => Err(CliError::new("interrupted")),
        r = refusals_fail(&watch, restore(&context, &args.from, &manifest, &version, &created)) => r,
    };
    match outcome {
        Ok(()) => {
            let summary = Summary::of(Direction::Restore, &args.from, &manifest, started.elapsed());
            println!("{summary}");
            Ok(())
        }
        Err(cause) => {
            let names = created.lock().map(|mut c| std::mem::take(&mut *c));
            let names = names.unwrap_or_default();
            Err(CliError::new(format!(
                "{cause}; {}",
                remove(&context, &names).await
            )))
        }
    }
}

/// The streams a restore creates: the buckets' and the event streams'.
fn targets(m: &Manifest) -> Vec<String> {
    m.buckets
        .iter()
        .map(|b| b.config.name.clone())
        .chain(m.streams.iter().map(|s| s.name.clone()))
        .collect()
}

/// Reads every data file once: sizes, checksums, every line a record, the streams' sequences
/// contiguous from their first, the counts the manifest gives.
fn verify(dir: &Path, m: &Manifest) -> CliResult<()> {
    let total = m.streams.iter().map(|s| s.messages).sum::<u64>()
        + m.buckets.iter().map(|b| b.keys).sum::<u64>();
    let bar = progress(total, "checking the backup");
    let streams = m
        .streams
        .iter()
        .map(|s| (&s.name, &s.file, Some(s.first_seq), s.messages));
    let buckets = m.buckets.iter().map(|b| (&b.name, &b.file, None, b.keys));
    for (name, file, first, count) in streams.chain(buckets) {
        verify_file(dir, name, file, first, count, &bar)?;
    }
    bar.finish_and_clear();
    Ok(())
}

fn verify_file(
    dir: &Path,
    name: &str,
    file: &DataFile,
    first: Option<u64>,
    count: u64,
    bar: &indicatif::ProgressBar,
) -> CliResult<()> {
    let path = dir.join(&file.path);
    let corrupt = |m: String| CliError::new(format!("corrupt backup: {}: {m}", path.display()));
    let mut reader =
        LineReader::open(&path).map_err(|e| corrupt(format!("cannot open it: {e}")))?;
    let mut n = 0u64;
    while let Some(record) = reader.next_record().map_err(&corrupt)? {
        if let Some(first) = first {
            let expected = first.saturating_add(n);
            if record.seq != expected {
                return Err(corrupt(format!(
                    "line {} holds sequence {} where stream {} continues at {expected} (a \
                     stream with gaps cannot be restored with the same sequences)",
                    n + 1,
                    record.seq,
                    escape(name)
                )));
            }
        }
        record
            .payload()
            .map_err(|e| corrupt(format!("line {}: {e}", n + 1)))?;
        n += 1;
        bar.inc(1);
    }
    if n != count {
        return Err(corrupt(format!(
            "it holds {n} records where the manifest says {count}"
        )));
    }
    let (bytes, sha256) = reader.digest();
    if bytes != file.bytes || sha256 != file.sha256 {
        return Err(corrupt(
            "its size or checksum differs from the manifest's".into(),
        ));
    }
    Ok(())
}

async fn restore(
    context: &Context,
    dir: &Path,
    m: &Manifest,
    version: &str,
    created: &Mutex<Vec<String>>,
) -> CliResult<()> {
    for b in &m.buckets {
        let config = b.config.clone();
        create(context, config, None, version, created).await?;
        publish(context, dir, &b.config.name, &b.file, None, b.keys).await?;
    }
    for s in &m.streams {
        create(
            context,
            s.config.clone(),
            Some(s.first_seq),
            version,
            created,
        )
        .await?;
        publish(
            context,
            dir,
            &s.name,
            &s.file,
            Some(s.first_seq),
            s.messages,
        )
        .await?;
    }
    Ok(())
}

/// Creates a stream with its saved settings, starting at `first` when that is past 1.
async fn create(
    context: &Context,
    mut config: Config,
    first: Option<u64>,
    version: &str,
    created: &Mutex<Vec<String>>,
) -> CliResult<()> {
    let name = config.name.clone();
    // Settings the server records about itself are its own to set again.
    config.metadata.retain(|k, _| !k.starts_with("_nats."));
    config.first_sequence = first.filter(|f| *f > 1);
    // Recorded first: interrupted while the server creates it, it is removed all the same.
    if let Ok(mut c) = created.lock() {
        c.push(name.clone());
    }
    let stream = match context.create_stream(config).await {
        Ok(stream) => stream,
        Err(e) => {
            // Refused by the server (one of that name appeared meanwhile, a setting it does
            // not take): not ours to delete. Unanswered, it may exist and is removed.
            if !matches!(
                e.kind(),
                CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::Response
            ) {
                if let Ok(mut c) = created.lock() {
                    c.retain(|n| n != &name);
                }
            }
            return Err(jetstream_hint(
                &format!("creating stream {}", escape(&name)),
                &e,
            ));
        }
    };
    if let Some(f) = first.filter(|f| *f > 1) {
        let next = stream.cached_info().state.last_sequence.saturating_add(1);
        if next != f {
            let needs = if server_older_than(version, 2, 10) {
                format!(
                    "nats-server {} cannot start a stream at a sequence (2.10 and later can)",
                    escape(version)
                )
            } else {
                format!("the server started it at {next}")
            };
            return Err(CliError::new(format!(
                "unsupported: stream {} must start at sequence {f} to keep its sequences, but {needs}",
                escape(&name)
            )));
        }
    }
    Ok(())
}

/// Publishes a data file's records again; with `first`, each must be stored at its saved
/// sequence.
async fn publish(
    context: &Context,
    dir: &Path,
    stream: &str,
    file: &DataFile,
    first: Option<u64>,
    count: u64,
) -> CliResult<()> {
    let path = dir.join(&file.path);
    let corrupt = |m: String| CliError::new(format!("corrupt backup: {}: {m}", path.display()));
    let mut reader =
        LineReader::open(&path).map_err(|e| corrupt(format!("cannot open it: {e}")))?;
    let bar = progress(count, &escape(stream));
    let mut in_flight: VecDeque<(u64, PublishAckFuture)> = VecDeque::new();
    let check_seq = first.is_some();
    while let Some(record) = reader.next_record().map_err(&corrupt)? {
        let payload = record.payload().map_err(&corrupt)?;
        let what = || {
            format!(
                "restoring message {} of stream {}",
                record.seq,
                escape(stream)
            )
        };
        let sent = match record.republished_headers() {
            Some(h) => {
                context
                    .publish_with_headers(record.subject.clone(), h, payload.into())
                    .await
            }
            None => {
                context
                    .publish(record.subject.clone(), payload.into())
                    .await
            }
        }
        .map_err(|e| jetstream_hint(&what(), &e))?;
        in_flight.push_back((record.seq, sent));
        if in_flight.len() >= IN_FLIGHT {
            if let Some((seq, ack)) = in_flight.pop_front() {
                acked(stream, seq, ack, check_seq).await?;
                bar.inc(1);
            }
        }
    }
    while let Some((seq, ack)) = in_flight.pop_front() {
        acked(stream, seq, ack, check_seq).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Waits for one acknowledgement and checks where the message went.
async fn acked(stream: &str, seq: u64, ack: PublishAckFuture, check_seq: bool) -> CliResult<()> {
    let what = format!("restoring message {seq} of stream {}", escape(stream));
    let ack = ack.await.map_err(|e| jetstream_hint(&what, &e))?;
    if ack.stream != stream {
        return Err(CliError::new(format!(
            "{what}: it was stored in stream {} instead",
            escape(&ack.stream)
        )));
    }
    if ack.duplicate {
        return Err(CliError::new(format!(
            "{what}: the server took it for a duplicate (its Nats-Msg-Id repeats within the \
             stream's duplicate window)"
        )));
    }
    if check_seq && ack.sequence != seq {
        return Err(CliError::new(format!(
            "{what}: it was stored at sequence {} and sequences would not match the backup",
            ack.sequence
        )));
    }
    Ok(())
}

/// Deletes the streams a failed restore created, and says how that went.
async fn remove(context: &Context, names: &[String]) -> String {
    if names.is_empty() {
        return "nothing had been written".into();
    }
    let left = remove_streams(context, names).await.left;
    if left.is_empty() {
        format!(
            "removed what the restore had created ({})",
            names
                .iter()
                .map(|n| escape(n).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "could not remove {}: delete {} by hand before restoring again",
            left.join(", "),
            if left.len() == 1 { "it" } else { "them" }
        )
    }
}
