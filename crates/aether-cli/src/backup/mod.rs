//! `aether backup` and `aether restore`: a namespace's event streams (every partition of a
//! partitioned store) and the key-value buckets Aether keeps beside them (the projections'
//! checkpoints), copied to a directory and put back on an empty server.
//!
//! # Consistency
//! Buckets are read first, then each event stream up to its last sequence as the server gave
//! it when that stream's copy began. The event streams deny deletes and purges, so a prefix
//! by sequence is, for every actor, a prefix of its history; a transaction is one atomic batch
//! in one partition's stream, so a prefix never holds part of one. A checkpoint read before
//! the stream points at or before the copied stream's end: a restored projection resumes from
//! it and at worst handles again the events written between the two reads.
//!
//! # Format ([`FORMAT_VERSION`] 1)
//! A directory with `manifest.json` ([`Manifest`]), one JSON-lines file per stream under
//! `streams/` and one per bucket under `buckets/`, each line a [`Record`]. The manifest gives
//! every file's size and SHA-256, so a restore checks everything before writing anything. The
//! backup is written to `<DIR>.partial` and renamed to `<DIR>` only once complete.
//!
//! # Restoring
//! Into a server without any of the backup's streams or buckets: each stream is created with
//! its saved settings, starting at its saved first sequence (nats-server 2.10 and later), and
//! every message is published again and must be stored at its saved sequence, so projections'
//! checkpoints and the store's concurrency checks (both sequences) hold on the new server.
//! An interrupted or failed restore deletes what it created.

mod load;
mod save;

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::stream;
use async_nats::HeaderMap;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{CliError, CliResult};

pub use load::{run as restore, RestoreArgs};
pub use save::{run as backup, BackupArgs};

/// Which way a [`Summary`]'s copy went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `aether backup`: from the server to the directory.
    Backup,
    /// `aether restore`: from the directory to the server.
    Restore,
}

/// What a backup or a restore copied: its one-line summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Backup or restore.
    pub direction: Direction,
    /// The backup directory.
    pub dir: PathBuf,
    /// Streams copied.
    pub streams: usize,
    /// Their messages.
    pub messages: u64,
    /// Buckets copied.
    pub buckets: usize,
    /// Their keys.
    pub keys: u64,
    /// Bytes of the data files.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl Summary {
    /// The summary of copying what `manifest` lists, to or from `dir`.
    pub fn of(direction: Direction, dir: &Path, manifest: &Manifest, elapsed: Duration) -> Self {
        Self {
            direction,
            dir: dir.to_path_buf(),
            streams: manifest.streams.len(),
            messages: manifest.streams.iter().map(|s| s.messages).sum(),
            buckets: manifest.buckets.len(),
            keys: manifest.buckets.iter().map(|b| b.keys).sum(),
            bytes: manifest
                .streams
                .iter()
                .map(|s| s.file.bytes)
                .chain(manifest.buckets.iter().map(|b| b.file.bytes))
                .sum(),
            elapsed,
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (done, way) = match self.direction {
            Direction::Backup => ("backed up", "to"),
            Direction::Restore => ("restored", "from"),
        };
        write!(
            f,
            "{done} {} stream{} ({} messages) and {} bucket{} ({} keys) {way} {}: {} in {}",
            self.streams,
            plural(self.streams),
            self.messages,
            self.buckets,
            plural(self.buckets),
            self.keys,
            crate::output::escape(&self.dir.display().to_string()),
            crate::output::human_bytes(self.bytes),
            crate::output::human_duration(self.elapsed)
        )
    }
}

/// `"s"` unless `n` is one.
pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name in a backup directory.
pub const MANIFEST: &str = "manifest.json";
/// The longest manifest read (a manifest lists streams and buckets, never messages).
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;
/// The longest line read from a data file: a message of the largest payload NATS allows
/// (64 MiB), in base64, with its headers.
const MAX_LINE_BYTES: usize = 96 * 1024 * 1024;

/// What a backup holds: `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the backup.
    pub format: u32,
    /// When the backup began (RFC 3339).
    pub created: String,
    /// The version of the nats-server backed up.
    pub server_version: String,
    /// The store's namespace (`None`: none).
    pub namespace: Option<String>,
    /// The unpartitioned stream's name, which partitions' names extend.
    pub stream_base: String,
    /// Partitions of the store's log (1: unpartitioned).
    pub partitions: u32,
    /// The event streams, in partition order.
    pub streams: Vec<StreamEntry>,
    /// The key-value buckets.
    pub buckets: Vec<BucketEntry>,
}

/// One event stream in a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEntry {
    /// The stream's name.
    pub name: String,
    /// Its configuration as the server gave it.
    pub config: stream::Config,
    /// The sequence of its first message backed up (with no message: the next sequence).
    pub first_seq: u64,
    /// The sequence of its last message backed up (`first_seq - 1` with none).
    pub last_seq: u64,
    /// Messages backed up.
    pub messages: u64,
    /// Where they are.
    pub file: DataFile,
}

/// One key-value bucket in a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketEntry {
    /// The bucket's name (its stream is `KV_<name>`).
    pub name: String,
    /// The configuration of its stream as the server gave it.
    pub config: stream::Config,
    /// Keys backed up (deleted keys are left out).
    pub keys: u64,
    /// Where they are.
    pub file: DataFile,
}

/// A data file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Its path, relative to the backup directory.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, in hex.
    pub sha256: String,
}

/// One line of a data file: a stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its stream sequence (for a bucket's key: the revision it had).
    pub seq: u64,
    /// Its subject.
    pub subject: String,
    /// When the server stored it (RFC 3339; a restored message gets the time of the restore).
    pub time: String,
    /// Its headers, in order, each value on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Its payload, in base64.
    pub data: String,
}

impl Record {
    /// A record of a stored message.
    fn new(
        seq: u64,
        subject: &str,
        published: async_nats::jetstream::message::Info<'_>,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Self {
        let mut pairs = Vec::new();
        if let Some(h) = headers {
            for (name, values) in h.iter() {
                for v in values {
                    pairs.push((name.to_string(), v.as_str().to_string()));
                }
            }
            // The client's header map is unordered: sorted by name, two backups of one stream
            // match; a stable sort keeps the order of one name's values.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
        }
        Self {
            seq,
            subject: subject.to_string(),
            time: rfc3339(published.published.unix_timestamp_nanos()),
            headers: pairs,
            data: base64::engine::general_purpose::STANDARD.encode(payload),
        }
    }

    /// The payload.
    fn payload(&self) -> Result<Vec<u8>, String> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| format!("its data is not base64: {e}"))
    }

    /// The headers to publish again: those the server acts on at publish time (expectations,
    /// atomic batches) and a key-value operation marker are left out, every other is kept.
    fn republished_headers(&self) -> Option<HeaderMap> {
        let mut map = HeaderMap::new();
        let mut any = false;
        for (name, value) in &self.headers {
            if !republished(name) {
                continue;
            }
            map.append(name.as_str(), value.as_str());
            any = true;
        }
        any.then_some(map)
    }
}

/// Whether a header is published again on restore.
fn republished(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower.starts_with("nats-expected-")
        || lower.starts_with("nats-batch-")
        || lower == "kv-operation")
}

/// Whether a stored bucket message is a deleted key (a delete or purge marker).
fn is_deletion(headers: Option<&HeaderMap>) -> bool {
    headers
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|v| matches!(v.as_str(), "DEL" | "PURGE"))
}

/// A server timestamp (nanoseconds since the epoch) as RFC 3339 with nanoseconds.
fn rfc3339(nanos: i128) -> String {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, sub)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .unwrap_or_default()
}

/// The file name a stream's data gets: its name when it is plain (letters, digits, `_`, `-`),
/// else its position, so a name from the server never becomes a path.
fn file_name(kind: &str, index: usize, name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{kind}/{name}.jsonl")
    } else {
        format!("{kind}/{kind}-{index}.jsonl")
    }
}

/// Whether `path` (from a manifest) stays inside the backup directory: relative, without `..`.
fn safe_relative(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && p.components().count() == 2
}

/// A file being written, counting its bytes and hashing them.
struct HashingWriter {
    inner: std::io::BufWriter<File>,
    hash: Sha256,
    bytes: u64,
}

impl HashingWriter {
    fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            inner: std::io::BufWriter::new(File::create(path)?),
            hash: Sha256::new(),
            bytes: 0,
        })
    }

    /// Writes one record as a line.
    fn line(&mut self, record: &Record) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        text.push(b'\n');
        self.inner.write_all(&text)?;
        self.hash.update(&text);
        self.bytes += text.len() as u64;
        Ok(())
    }

    /// Flushes, syncs to disk, and says what was written.
    fn finish(mut self, path: String) -> std::io::Result<DataFile> {
        self.inner.flush()?;
        self.inner.get_ref().sync_all()?;
        Ok(DataFile {
            path,
            bytes: self.bytes,
            sha256: hex(&self.hash.finalize()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads the lines of a data file one at a time, each at most [`MAX_LINE_BYTES`], hashing
/// what it reads.
struct LineReader {
    inner: std::io::BufReader<File>,
    hash: Sha256,
    bytes: u64,
    line: usize,
    buf: Vec<u8>,
}

impl LineReader {
    fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            inner: std::io::BufReader::new(File::open(path)?),
            hash: Sha256::new(),
            bytes: 0,
            line: 0,
            buf: Vec::new(),
        })
    }

    /// The next record, `None` at the end; the error says which line and why.
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        self.buf.clear();
        let limit = (MAX_LINE_BYTES + 1) as u64;
        let n = (&mut self.inner)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| format!("cannot read it: {e}"))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        self.hash.update(&self.buf);
        self.bytes += n as u64;
        if self.buf.last() != Some(&b'\n') {
            return Err(if n > MAX_LINE_BYTES {
                format!("line {} is longer than {MAX_LINE_BYTES} bytes", self.line)
            } else {
                format!("line {} is cut short (the file is truncated)", self.line)
            });
        }
        serde_json::from_slice(&self.buf)
            .map(Some)
            .map_err(|e| format!("line {} is not a message record: {e}", self.line))
    }

    /// The size and SHA-256 of what was read.
    fn digest(self) -> (u64, String) {
        (self.bytes, hex(&self.hash.finalize()))
    }
}

/// Reads and checks `manifest.json` of the backup in `dir`.
///
/// # Errors
/// A missing directory or manifest, a manifest that is not JSON or not one this build reads
/// (another format version), or one naming files outside the directory.
pub fn read_manifest(dir: &Path) -> CliResult<Manifest> {
    if !dir.is_dir() {
        return Err(CliError::new(format!(
            "no backup at {}: not a directory",
            dir.display()
        )));
    }
    let path = dir.join(MANIFEST);
    let file = File::open(&path).map_err(|e| {
        CliError::new(format!(
            "no backup at {}: cannot open {MANIFEST}: {e}",
            dir.display()
        ))
    })?;
    let mut text = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| CliError::new(format!("cannot read {}: {e}", path.display())))?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(CliError::new(format!(
            "corrupt backup: {} is larger than {MAX_MANIFEST_BYTES} bytes",
            path.display()
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        CliError::new(format!(
            "corrupt backup: {} is not JSON: {e}",
            path.display()
        ))
    })?;
    match value.get("format").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(CliError::new(format!(
                "unsupported backup format {v} in {} (this aether reads format {FORMAT_VERSION})",
                path.display()
            )))
        }
        None => {
            return Err(CliError::new(format!(
                "corrupt backup: {} has no format version",
                path.display()
            )))
        }
    }
    let manifest: Manifest = serde_json::from_value(value).map_err(|e| {
        CliError::new(format!(
            "corrupt backup: {} is not a backup manifest: {e}",
            path.display()
        ))
    })?;
    check_manifest(&manifest)
        .map_err(|m| CliError::new(format!("corrupt backup: {}: {m}", path.display())))?;
    Ok(manifest)
}

/// The checks on a manifest's content that need no data file.
fn check_manifest(m: &Manifest) -> Result<(), String> {
    if m.streams.is_empty() {
        return Err("it lists no stream".into());
    }
    let mut names = std::collections::BTreeSet::new();
    let mut files = std::collections::BTreeSet::new();
    let streams = m.streams.iter().map(|s| {
        (
            &s.name,
            &s.config,
            &s.file,
            Some((s.first_seq, s.last_seq, s.messages)),
        )
    });
    let buckets = m
        .buckets
        .iter()
        .map(|b| (&b.name, &b.config, &b.file, None));
    for (name, config, file, range) in streams.chain(buckets) {
        if name.is_empty() || !names.insert(name.clone()) {
            return Err(format!("the name {name:?} is empty or listed twice"));
        }
        if !safe_relative(&file.path) || !files.insert(file.path.clone()) {
            return Err(format!(
                "the data file {:?} of {name} is outside the backup or listed twice",
                file.path
            ));
        }
        if config.mirror.is_some() || config.sources.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(format!(
                "{name} is a mirror or has sources, which a restore cannot recreate"
            ));
        }
        if let Some((first, last, messages)) = range {
            if first == 0
                || last.checked_add(1).and_then(|n| n.checked_sub(first)) != Some(messages)
            {
                return Err(format!(
                    "stream {name}: sequences {first} to {last} do not hold {messages} messages"
                ));
            }
        }
    }
    for b in &m.buckets {
        if b.config.name != format!("KV_{}", b.name) {
            return Err(format!(
                "bucket {} has the stream {} (expected KV_{})",
                b.name, b.config.name, b.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_a_manifest_stay_inside_the_backup() {
        assert!(safe_relative("streams/A_B.jsonl"));
        assert!(!safe_relative("../x/y.jsonl"));
        assert!(!safe_relative("/etc/passwd"));
        assert!(!safe_relative("streams/../../y"));
        assert!(!safe_relative("y.jsonl"));
        assert!(!safe_relative(""));
        assert_eq!(
            file_name("streams", 3, "ns_EV_P0"),
            "streams/ns_EV_P0.jsonl"
        );
        assert_eq!(file_name("streams", 3, "a/../b"), "streams/streams-3.jsonl");
    }

    #[test]
    fn publish_time_headers_are_not_republished() {
        let r = Record {
            seq: 1,
            subject: "s".into(),
            time: String::new(),
            headers: vec![
                ("Aether-Version".into(), "3".into()),
                ("Nats-Expected-Last-Subject-Sequence".into(), "2".into()),
                ("Nats-Batch-Id".into(), "b".into()),
                ("Nats-Msg-Id".into(), "m".into()),
            ],
            data: String::new(),
        };
        let h = r.republished_headers().unwrap();
        assert_eq!(h.get("Aether-Version").unwrap().as_str(), "3");
        assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), "m");
        assert!(h.get("Nats-Expected-Last-Subject-Sequence").is_none());
        assert!(h.get("Nats-Batch-Id").is_none());
    }

    #[test]
    fn records_round_trip_through_a_file_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        let mut w = HashingWriter::create(&path).unwrap();
        let r = Record {
            seq: 7,
            subject: "a.b".into(),
            time: rfc3339(1_700_000_000_123_456_789),
            headers: vec![("K".into(), "v".into())],
            data: base64::engine::general_purpose::STANDARD.encode(b"payload"),
        };
        w.line(&r).unwrap();
        let written = w.finish("streams/f.jsonl".into()).unwrap();
        let mut reader = LineReader::open(&path).unwrap();
        assert_eq!(reader.next_record().unwrap(), Some(r.clone()));
        assert_eq!(reader.next_record().unwrap(), None);
        assert_eq!(reader.digest(), (written.bytes, written.sha256));
        assert_eq!(r.payload().unwrap(), b"payload");

        std::fs::write(&path, "{\"seq\":1}\n").unwrap();
        let e = LineReader::open(&path).unwrap().next_record().unwrap_err();
        assert!(e.starts_with("line 1 is not a message record"), "{e}");
        std::fs::write(&path, serde_json::to_string(&r).unwrap()).unwrap();
        let e = LineReader::open(&path).unwrap().next_record().unwrap_err();
        assert!(e.contains("cut short"), "{e}");
    }
}
