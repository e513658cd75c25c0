//! Golden files: the bytes a crate persists or sends, kept under `tests/golden/<dir>/`, one
//! directory per release (or per wire version), so that a format change cannot go unnoticed
//! and every older directory keeps being read back.
//!
//! See [`GoldenFiles`], and [`GoldenMessage`] for the `.msg` files of messaging crates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The environment variable that turns blessing on, when set to exactly `1`.
pub const BLESS_ENV: &str = "AETHER_BLESS_GOLDEN";

/// The golden files of one crate: `<manifest dir>/tests/golden/<dir>/<name>`.
///
/// A released golden file is never edited: a format change adds a directory next to the old
/// ones. The current directory (by default the crate version's `major.minor`, see
/// [`GoldenFiles::new`]) must hold exactly what the current code writes; older directories
/// are only read.
///
/// Semantics the golden tests rely on:
/// - Blessing is on only when [`BLESS_ENV`] (`AETHER_BLESS_GOLDEN`) is set to exactly `1`;
///   any other value, or none, is off ([`GoldenFiles::blessing`]).
/// - [`bless`](GoldenFiles::bless) writes the current directory's file only when blessing,
///   creating the directory if needed (that is how a new release's directory starts); it never
///   writes anything else, and never writes when blessing is off.
/// - [`pin`](GoldenFiles::pin) blesses, then compares the current directory's file with the
///   bytes, so a blessed run passes and any other run fails on a difference.
/// - [`releases`](GoldenFiles::releases) lists directories only (a `README.md` beside them is
///   skipped), in release order, and asserts the current one is among them.
/// - Reading a missing file panics with its path.
///
/// ```
/// use aether_testkit::golden::GoldenFiles;
///
/// let crate_dir = tempfile::tempdir().unwrap();
/// let release = crate_dir.path().join("tests/golden/1.4");
/// std::fs::create_dir_all(&release).unwrap();
/// std::fs::write(release.join("event.json"), br#"{"v":1}"#).unwrap();
///
/// // In a test: GoldenFiles::new(env!("CARGO_MANIFEST_DIR"), env!("CARGO_PKG_VERSION")).
/// let golden = GoldenFiles::new(crate_dir.path(), "1.4.2");
/// assert_eq!(golden.current(), "1.4");
/// assert_eq!(golden.releases(), ["1.4"]);
/// // What the code writes now must be the current release's file.
/// golden.pin("event.json", br#"{"v":1}"#);
/// // Every release's file must still read back.
/// for release in golden.releases() {
///     assert_eq!(golden.read(&release, "event.json"), br#"{"v":1}"#);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct GoldenFiles {
    root: PathBuf,
    current: String,
}

impl GoldenFiles {
    /// The golden files of the crate at `manifest_dir` (`env!("CARGO_MANIFEST_DIR")`), whose
    /// current directory is the `major.minor` of `version` (`env!("CARGO_PKG_VERSION")`):
    /// patch releases share their minor release's format.
    pub fn new(manifest_dir: impl AsRef<Path>, version: &str) -> Self {
        let mut parts = version.split('.');
        let current = format!(
            "{}.{}",
            parts.next().unwrap_or("0"),
            parts.next().unwrap_or("0")
        );
        Self::with_current(manifest_dir, current)
    }

    /// The golden files of the crate at `manifest_dir` whose current directory is named
    /// `current`, for directories that are not named by release (`wire-3` for a wire version).
    pub fn with_current(manifest_dir: impl AsRef<Path>, current: impl Into<String>) -> Self {
        Self {
            root: manifest_dir.as_ref().join("tests/golden"),
            current: current.into(),
        }
    }

    /// `tests/golden` under the manifest directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The name of the current directory: the one the current code must write exactly.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// The path of directory `dir`.
    pub fn dir(&self, dir: &str) -> PathBuf {
        self.root.join(dir)
    }

    /// Every directory under `tests/golden`, oldest first (dot-separated numbers compare as
    /// numbers, so `0.10` comes after `0.9`).
    ///
    /// # Panics
    /// When `tests/golden` cannot be read, or the current directory is missing (run the tests
    /// once with `AETHER_BLESS_GOLDEN=1` to create it).
    pub fn releases(&self) -> Vec<String> {
        let entries = std::fs::read_dir(&self.root)
            .unwrap_or_else(|e| panic!("{}: {e}", self.root.display()));
        let mut out: Vec<String> = entries
            .map(|e| e.expect("directory entry"))
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort_by_key(|r| release_order(r));
        assert!(
            out.contains(&self.current),
            "{}: no directory {} for the current release among {out:?} \
             (run with {BLESS_ENV}=1 to create it)",
            self.root.display(),
            self.current
        );
        out
    }

    /// The names of the files of directory `dir`, sorted.
    ///
    /// # Panics
    /// When the directory cannot be read.
    pub fn files(&self, dir: &str) -> Vec<String> {
        let path = self.dir(dir);
        let entries =
            std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut out: Vec<String> = entries
            .map(|e| e.expect("directory entry"))
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// The bytes of file `name` of directory `dir`.
    ///
    /// # Panics
    /// When the file cannot be read, naming its path.
    #[track_caller]
    pub fn read(&self, dir: &str, name: &str) -> Vec<u8> {
        let path = self.dir(dir).join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// File `name` of directory `dir`, parsed as a [`GoldenMessage`].
    ///
    /// # Panics
    /// When the file cannot be read or is not in the `.msg` form, naming it.
    #[track_caller]
    pub fn read_message(&self, dir: &str, name: &str) -> GoldenMessage {
        GoldenMessage::parse(&self.read(dir, name), &format!("{dir}/{name}"))
    }

    /// Whether this run rewrites the current directory's files: [`BLESS_ENV`] is exactly `1`.
    pub fn blessing() -> bool {
        std::env::var_os(BLESS_ENV).is_some_and(|v| v == "1")
    }

    /// Writes `bytes` as the current directory's file `name` when [blessing](Self::blessing),
    /// creating the directory if needed; does nothing otherwise.
    ///
    /// # Panics
    /// When blessing and the file cannot be written.
    #[track_caller]
    pub fn bless(&self, name: &str, bytes: &[u8]) {
        if !Self::blessing() {
            return;
        }
        let dir = self.dir(&self.current);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Checks that the current directory's file `name` is exactly `bytes`, after
    /// [blessing](Self::bless) it when that is on.
    ///
    /// # Panics
    /// When the file is missing or its bytes differ; the message names the file and shows
    /// both contents (as text, with invalid UTF-8 replaced).
    #[track_caller]
    pub fn pin(&self, name: &str, bytes: &[u8]) {
        self.bless(name, bytes);
        let golden = self.read(&self.current, name);
        if golden != bytes {
            panic!(
                "{}/{name} ({}): the code now writes something else than this golden file. \
                 A released golden file is never changed in place: a format change needs a new \
                 release directory next to this one ({BLESS_ENV}=1 writes the current one), \
                 and the old one must keep being read.\n golden: {}\nwritten: {}",
                self.current,
                self.dir(&self.current).join(name).display(),
                String::from_utf8_lossy(&golden),
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

/// One NATS message as a golden `.msg` file holds it: the subject on the first line, then
/// one `Name: value` line per header value (sorted by name, a name's values in order), an
/// empty line, and the payload's exact bytes (no newline added).
///
/// [`render`](Self::render) writes that form and [`parse`](Self::parse) reads it back, so a
/// file written by rendering compares byte for byte with [`GoldenFiles::pin`].
///
/// ```
/// use aether_testkit::golden::GoldenMessage;
///
/// let m = GoldenMessage {
///     subject: "orders.1".into(),
///     headers: [("Aether-Type".to_string(), vec!["Placed".to_string()])].into(),
///     payload: br#"{"qty":2}"#.to_vec(),
/// };
/// assert_eq!(m.render(), b"orders.1\nAether-Type: Placed\n\n{\"qty\":2}");
/// assert_eq!(GoldenMessage::parse(&m.render(), "example.msg"), m);
/// assert_eq!(m.header("Aether-Type"), Some("Placed"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GoldenMessage {
    /// The subject.
    pub subject: String,
    /// Each header's values, by name.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The payload's exact bytes.
    pub payload: Vec<u8>,
}

impl GoldenMessage {
    /// Parses the bytes of a `.msg` file; `file` names it in panic messages.
    ///
    /// # Panics
    /// When the bytes end before the empty line, a line is not UTF-8, or a header line has
    /// no `": "`.
    #[track_caller]
    pub fn parse(bytes: &[u8], file: &str) -> Self {
        let mut rest = bytes;
        let mut line = || {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or_else(|| panic!("{file}: truncated"));
            let l = std::str::from_utf8(&rest[..end])
                .unwrap_or_else(|e| panic!("{file}: a line that is not UTF-8: {e}"))
                .to_string();
            rest = &rest[end + 1..];
            l
        };
        let subject = line();
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        loop {
            let l = line();
            if l.is_empty() {
                break;
            }
            let (name, value) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("{file}: bad header line {l:?}"));
            headers
                .entry(name.to_string())
                .or_default()
                .push(value.to_string());
        }
        Self {
            subject,
            headers,
            payload: rest.to_vec(),
        }
    }

    /// The bytes of the `.msg` file of this message.
    pub fn render(&self) -> Vec<u8> {
        let mut out = format!("{}\n", self.subject).into_bytes();
        for (name, values) in &self.headers {
            for v in values {
                out.extend_from_slice(format!("{name}: {v}\n").as_bytes());
            }
        }
        out.push(b'\n');
        out.extend_from_slice(&self.payload);
        out
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// The sort key of a directory name: each dot-separated part as a number when it is one
/// (after any number), then as text.
fn release_order(name: &str) -> Vec<(u64, String)> {
    name.split('.')
        .map(|p| (p.parse::<u64>().unwrap_or(u64::MAX), p.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_release_is_major_minor() {
        assert_eq!(GoldenFiles::new("/x", "0.12.3").current(), "0.12");
        assert_eq!(GoldenFiles::new("/x", "2.0.0-rc.1").current(), "2.0");
        assert_eq!(
            GoldenFiles::with_current("/x", "wire-3").current(),
            "wire-3"
        );
    }

    #[test]
    fn releases_sort_numerically_and_skip_files() {
        let crate_dir = tempfile::tempdir().unwrap();
        let root = crate_dir.path().join("tests/golden");
        for r in ["0.10", "0.9", "1.0"] {
            std::fs::create_dir_all(root.join(r)).unwrap();
        }
        std::fs::write(root.join("README.md"), "").unwrap();
        let golden = GoldenFiles::new(crate_dir.path(), "0.9.1");
        assert_eq!(golden.releases(), ["0.9", "0.10", "1.0"]);
    }

    #[test]
    #[should_panic(expected = "no directory 0.2 for the current release")]
    fn releases_require_the_current_one() {
        let crate_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(crate_dir.path().join("tests/golden/0.1")).unwrap();
        GoldenFiles::new(crate_dir.path(), "0.2.0").releases();
    }

    #[test]
    fn messages_keep_every_header_value_in_order() {
        let bytes = b"s\nA: 2\nA: 1\nB: x: y\n\nline\n\nend";
        let m = GoldenMessage::parse(bytes, "m.msg");
        assert_eq!(m.subject, "s");
        assert_eq!(m.headers["A"], ["2", "1"]);
        assert_eq!(m.header("B"), Some("x: y"));
        assert_eq!(m.payload, b"line\n\nend");
        assert_eq!(m.render(), bytes);
    }

    #[test]
    fn pin_fails_on_a_difference_naming_the_file() {
        let crate_dir = tempfile::tempdir().unwrap();
        let dir = crate_dir.path().join("tests/golden/0.1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.json"), "1").unwrap();
        let golden = GoldenFiles::new(crate_dir.path(), "0.1.0");
        golden.pin("a.json", b"1");
        if GoldenFiles::blessing() {
            // Blessing rewrites the file instead of failing.
            return;
        }
        let err = std::panic::catch_unwind(|| golden.pin("a.json", b"2")).unwrap_err();
        let msg = err.downcast_ref::<String>().expect("a message");
        assert!(msg.contains("0.1/a.json"), "{msg}");
        assert!(msg.contains("new release directory"), "{msg}");
    }
}
