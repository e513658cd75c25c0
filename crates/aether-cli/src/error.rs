//! The error every command fails with: one line, already worded for the person at the
//! terminal, with its causes and without control characters.

use std::fmt;

/// A command's failure, as one line of text (no trailing newline, no `error:` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    message: String,
}

/// Result of a command.
pub type CliResult<T> = std::result::Result<T, CliError>;

impl CliError {
    /// An error with this message (newlines are folded into spaces, and control characters
    /// escaped: a message may quote an actor id or a server's text).
    pub fn new(message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self {
            message: crate::output::escape(&one_line(&message)).into_owned(),
        }
    }

    /// An error saying what was being done and why it failed, with the whole source chain.
    pub fn context(what: impl fmt::Display, cause: &(dyn std::error::Error + 'static)) -> Self {
        Self::new(format!("{what}: {}", chain(cause)))
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<aether_core::Error> for CliError {
    fn from(e: aether_core::Error) -> Self {
        Self::new(with_hint(chain(&e)))
    }
}

/// Adds what to check to messages whose cause is usually the server's setup: JetStream
/// requests nobody answers mean JetStream is off (or the account has none).
pub(crate) fn with_hint(text: String) -> String {
    let lower = text.to_lowercase();
    if lower.contains("no responders")
        || lower.contains("jetstream resource does not exist")
        || lower.contains("jetstream not enabled")
    {
        format!("{text} (is JetStream enabled on the server?)")
    } else {
        text
    }
}

/// The error and its sources on one line (the NATS layer's one way to say it).
pub(crate) use aether_nats::error_chain as chain;

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_with_their_sources() {
        let e = CliError::new("a\nb\n\n  c");
        assert_eq!(e.message(), "a b c");
        let io = std::io::Error::other("refused");
        let core = aether_core::Error::unavailable("connecting", io);
        let e = CliError::from(core);
        assert!(e.message().contains("connecting"), "{e}");
        assert!(e.message().contains("refused"), "{e}");
        let e = CliError::new("actor a\u{1b}]0;x\u{7} has no events");
        assert_eq!(e.message(), "actor a\\x1b]0;x\\x07 has no events");
    }
}
