//! Terminal output: colours only when stdout is a terminal and `NO_COLOR` is not set, aligned
//! tables, and progress bars that stay hidden when stderr is not a terminal.
//!
//! Everything printed for people goes through [`escape`]: event types, actor ids, node ids and
//! event data come from whoever wrote them, and a terminal acts on control characters rather
//! than showing them (an escape sequence can set the window title, write the clipboard or
//! erase lines). [`Painter`] escapes the text it styles and [`Table`] escapes its cells, so a
//! printer built on them cannot forget; `--json` output is JSON, which escapes on its own.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether colours may be used on stdout: a terminal, and `NO_COLOR` unset or empty.
pub fn colours_enabled() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// `text` with every character a terminal would act on rather than show written as a visible
/// escape: C0 controls and DEL (`\x1b`, `\x07`; `\n`, `\r`, `\t` for the usual three), C1
/// controls (`\u{9b}`), and the bidirectional overrides and isolates U+202A–U+202E and
/// U+2066–U+2069 (`\u{202e}`), which reorder what follows them on the line. Text without any
/// is returned as it is.
///
/// ```
/// use aether_cli::output::escape;
///
/// assert_eq!(escape("Deposited"), "Deposited");
/// assert_eq!(escape("a\u{1b}]0;owned\u{7}b"), "a\\x1b]0;owned\\x07b");
/// assert_eq!(escape("x\u{202e}y\u{9b}"), "x\\u{202e}y\\u{9b}");
/// ```
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// An actor as people read it: `type/id`, or the id alone for an untyped actor. Not escaped:
/// print it through [`Painter`], [`Table`] or [`escape`].
///
/// ```
/// use aether_cli::output::actor_name;
/// use aether_core::ActorKey;
///
/// assert_eq!(actor_name(ActorKey::new("show", "s-1")), "show/s-1");
/// assert_eq!(actor_name(ActorKey::untyped("s-1")), "s-1");
/// ```
pub fn actor_name(actor: aether_core::ActorKey<'_>) -> String {
    match actor.actor_type {
        Some(t) => format!("{t}/{}", actor.actor_id),
        None => actor.actor_id.to_string(),
    }
}

/// Whether a terminal would act on `c` rather than show it.
fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write as _;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{0}'..='\u{1f}' | '\u{7f}' => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if needs_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// The styles a [`Painter`] uses: the only escape sequences this tool writes itself.
const STYLES: [Style; 6] = [
    Style::new().bold(),
    Style::new().dimmed(),
    AnsiColor::Green.on_default(),
    AnsiColor::Red.on_default(),
    AnsiColor::Yellow.on_default(),
    AnsiColor::Cyan.on_default(),
];

/// `text` escaped like [`escape`], except for the style sequences `painter` writes (when it
/// colours at all): a table cell may hold text a painter styled, whose text is escaped already.
fn escape_keeping_styles(text: &str, painter: Painter) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let own: Vec<String> = if painter.enabled {
        STYLES
            .iter()
            .flat_map(|s| [s.render().to_string(), s.render_reset().to_string()])
            .collect()
    } else {
        Vec::new()
    };
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\u{1b}' {
            if let Some(seq) = own.iter().find(|seq| rest.starts_with(seq.as_str())) {
                out.push_str(seq);
                rest = &rest[seq.len()..];
                continue;
            }
        }
        push_escaped(&mut out, c);
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// Styles text for stdout, or leaves it plain when colours are off. The text is escaped
/// ([`escape`]) either way.
#[derive(Debug, Clone, Copy)]
pub struct Painter {
    enabled: bool,
}

impl Painter {
    /// A painter for stdout as it is now (see [`colours_enabled`]).
    pub fn stdout() -> Self {
        Self {
            enabled: colours_enabled(),
        }
    }

    /// A painter that never colours.
    pub fn plain() -> Self {
        Self { enabled: false }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        let text = escape(text);
        if self.enabled {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.into_owned()
        }
    }

    /// Bold.
    pub fn bold(&self, text: &str) -> String {
        self.paint(STYLES[0], text)
    }

    /// Dimmed.
    pub fn dim(&self, text: &str) -> String {
        self.paint(STYLES[1], text)
    }

    /// Green (success).
    pub fn green(&self, text: &str) -> String {
        self.paint(STYLES[2], text)
    }

    /// Red (failure).
    pub fn red(&self, text: &str) -> String {
        self.paint(STYLES[3], text)
    }

    /// Yellow (attention).
    pub fn yellow(&self, text: &str) -> String {
        self.paint(STYLES[4], text)
    }

    /// Cyan (names).
    pub fn cyan(&self, text: &str) -> String {
        self.paint(STYLES[5], text)
    }
}

/// A table with left-aligned columns separated by two spaces, the header in bold. Cells are
/// escaped when rendered ([`escape`]; the styles of the painter it is rendered with are kept).
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<S: AsRef<str>>(header: &[S]) -> Self {
        Self {
            header: header.iter().map(|h| h.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self, painter: Painter) -> String {
        let escaped = |row: &[String]| -> Vec<String> {
            row.iter()
                .map(|cell| escape_keeping_styles(cell, painter).into_owned())
                .collect()
        };
        let header = escaped(&self.header);
        let rows: Vec<Vec<String>> = self.rows.iter().map(|r| escaped(r)).collect();
        let columns = rows
            .iter()
            .map(Vec::len)
            .chain([header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in std::iter::once(&header).chain(&rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(visible_len(cell));
            }
        }
        let line = |row: &[String], bold: bool| {
            let mut out = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                let last = i + 1 == columns;
                let padded = if last {
                    cell.to_string()
                } else {
                    let pad = width.saturating_sub(visible_len(cell)) + 2;
                    format!("{cell}{}", " ".repeat(pad))
                };
                out.push_str(&if bold { painter.bold(&padded) } else { padded });
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = String::new();
        if !header.is_empty() {
            out.push_str(&line(&header, true));
        }
        for row in &rows {
            out.push_str(&line(row, false));
        }
        out
    }
}

/// The width of `text` on screen: characters, less the ANSI style sequences.
fn visible_len(text: &str) -> usize {
    let mut n = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            n += 1;
        }
    }
    n
}

/// A progress bar on stderr for `len` steps, hidden when stderr is not a terminal.
pub fn progress(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), draw_target());
    let style = ProgressStyle::with_template("{msg:<28} [{bar:30}] {pos}/{len} ({elapsed})")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message.to_string());
    bar
}

/// A spinner on stderr for a wait of unknown length, hidden when stderr is not a terminal.
pub fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, draw_target());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn draw_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// Formats a duration for people: `850ms`, `2.4s`, `3m 05s`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m {:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// Formats a byte count: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Writes shard numbers as ranges: `0-3, 7, 9-12`.
pub fn ranges(sorted: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_stay_plain_without_colour() {
        let mut t = Table::new(&["a", "long header"]);
        t.row(vec!["value".into(), "x".into()]);
        t.row(vec!["v".into()]);
        let text = t.render(Painter::plain());
        assert_eq!(text, "a      long header\nvalue  x\nv\n");
        assert_eq!(t.len(), 2);
        let coloured = Painter { enabled: true };
        let mut t = Table::new(&["a", "b"]);
        t.row(vec![coloured.green("ok"), "x".into()]);
        t.row(vec!["long".into(), "y".into()]);
        let text = t.render(Painter::plain());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(visible_len(lines[1]), visible_len(lines[2]), "{text:?}");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        // A window title (OSC 0), the clipboard (OSC 52), a line erased (CSI 2K), a bell, an
        // 8-bit CSI and a right-to-left override.
        let hostile = "t\u{1b}]0;pwned\u{7}\u{1b}]52;c;aGk=\u{7}\u{1b}[2K\u{9b}31m\u{202e}\u{2066}\u{7f}\r\n\t.";
        let shown = escape(hostile);
        assert_eq!(
            shown,
            "t\\x1b]0;pwned\\x07\\x1b]52;c;aGk=\\x07\\x1b[2K\\u{9b}31m\\u{202e}\\u{2066}\\x7f\\r\\n\\t."
        );
        assert!(!shown.chars().any(needs_escape), "{shown}");
        assert!(matches!(escape("plain é ü 東京"), Cow::Borrowed(_)));

        // Painted text and table cells are escaped whether colours are on or not; the
        // painter's own styles survive in a table.
        for painter in [Painter::plain(), Painter { enabled: true }] {
            let painted = painter.cyan(hostile);
            assert!(painted.contains("\\x1b]0;pwned"), "{painted:?}");
            let mut t = Table::new(&["A", "B"]);
            t.row(vec![hostile.to_string(), painter.green("ok")]);
            let text = t.render(painter);
            assert!(
                !text.contains('\u{7}') && !text.contains('\u{9b}'),
                "{text:?}"
            );
            assert!(text.contains("\\x1b]52;c;aGk="), "{text:?}");
            let raw_escapes = text.matches('\u{1b}').count();
            // Two header cells in bold and one green cell, each styled then reset.
            let styles = if painter.enabled { 6 } else { 0 };
            assert_eq!(raw_escapes, styles, "{text:?}");
        }
    }

    #[test]
    fn human_formats() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_millis(2400)), "2.4s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3, 7, 9-10");
        assert_eq!(ranges(&[]), "");
    }
}
