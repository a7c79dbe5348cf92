//! Human output: colour on a terminal (never elsewhere), wrapping at the terminal width, a
//! pager for long output, citations as `path:line`, and corpus text made safe to print.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
use std::process::{Child, Command, Stdio};

use anstyle::{AnsiColor, Style};

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorWhen {
    /// Colour when stdout is a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    /// Always colour, even into a pipe.
    Always,
    /// Never colour.
    Never,
}

impl ColorWhen {
    /// Whether stdout gets colour: `auto` follows anstream (terminal, `NO_COLOR`,
    /// `CLICOLOR_FORCE`, `TERM=dumb`).
    pub fn enabled(self) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                anstream::AutoStream::choice(&io::stdout()) != anstream::ColorChoice::Never
            }
        }
    }
}

const HIGHLIGHT: Style = Style::new()
    .bold()
    .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Red)));
const TITLE: Style = Style::new().bold();
const PATH: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Magenta)));
const KIND: Style = Style::new().fg_color(Some(anstyle::Color::Ansi(AnsiColor::Cyan)));
const DIM: Style = Style::new().dimmed();
const HEADING: Style = Style::new()
    .bold()
    .fg_color(Some(anstyle::Color::Ansi(AnsiColor::Yellow)));

/// Where human output goes, and how it looks.
pub struct Printer {
    out: Box<dyn Write>,
    pager: Option<Child>,
    color: bool,
    width: Option<usize>,
}

impl Printer {
    /// Straight to stdout.
    pub fn stdout(color: ColorWhen) -> Printer {
        Printer {
            out: Box::new(io::BufWriter::new(io::stdout())),
            pager: None,
            color: color.enabled(),
            width: terminal_width(),
        }
    }

    /// Through `$PRECEDENT_PAGER` or `$PAGER` (default `less`, with `LESS=FRX` unless `LESS` is
    /// set, so that short output is printed as it is), as git does, when stdout is a terminal
    /// and `no_pager` is false.
    pub fn paged(color: ColorWhen, no_pager: bool) -> Printer {
        let mut printer = Printer::stdout(color);
        if no_pager || !io::stdout().is_terminal() {
            return printer;
        }
        let command = std::env::var("PRECEDENT_PAGER")
            .or_else(|_| std::env::var("PAGER"))
            .unwrap_or_else(|_| "less".to_owned());
        let command = command.trim();
        if command.is_empty() || command == "cat" {
            return printer;
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(command).stdin(Stdio::piped());
        if std::env::var_os("LESS").is_none() {
            cmd.env("LESS", "FRX");
        }
        if std::env::var_os("LV").is_none() {
            cmd.env("LV", "-c");
        }
        if let Ok(mut child) = cmd.spawn()
            && let Some(stdin) = child.stdin.take()
        {
            printer.out = Box::new(io::BufWriter::new(stdin));
            printer.pager = Some(child);
        }
        printer
    }

    /// Writes one line (corpus text in it must have gone through [`clean`] or a styling
    /// method).
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.out, "{text}")
    }

    /// Writes `text` wrapped at the terminal width on word boundaries, every line after the
    /// first indented by `indent`, the first starting after `first` (already styled). Words in
    /// `**` are highlighted.
    pub fn wrapped(
        &mut self,
        first: &str,
        first_width: usize,
        indent: &str,
        text: &str,
    ) -> io::Result<()> {
        self.wrapped_in(None, first, first_width, indent, text)
    }

    /// [`Printer::wrapped`] for a title.
    pub fn wrapped_title(
        &mut self,
        first: &str,
        first_width: usize,
        indent: &str,
        text: &str,
    ) -> io::Result<()> {
        self.wrapped_in(Some(TITLE), first, first_width, indent, text)
    }

    fn wrapped_in(
        &mut self,
        style: Option<Style>,
        first: &str,
        first_width: usize,
        indent: &str,
        text: &str,
    ) -> io::Result<()> {
        let lines = wrap(
            &clean(text),
            self.width.map(|w| {
                (
                    w.saturating_sub(first_width).max(20),
                    w.saturating_sub(indent.len()).max(20),
                )
            }),
        );
        let mut open = false;
        for (i, line) in lines.iter().enumerate() {
            let lead = if i == 0 { first } else { indent };
            let body = self.highlight_line(line, &mut open);
            match style {
                Some(style) if self.color => writeln!(self.out, "{lead}{style}{body}{style:#}")?,
                _ => writeln!(self.out, "{lead}{body}")?,
            }
        }
        if lines.is_empty() {
            writeln!(self.out, "{first}")?;
        }
        Ok(())
    }

    fn highlight_line(&self, line: &str, open: &mut bool) -> String {
        let mut out = String::with_capacity(line.len() + 16);
        for (i, part) in line.split("**").enumerate() {
            if i > 0 {
                *open = !*open;
            }
            if part.is_empty() {
                continue;
            }
            if *open && self.color {
                out.push_str(&format!("{HIGHLIGHT}{part}{HIGHLIGHT:#}"));
            } else {
                out.push_str(part);
            }
        }
        out
    }

    fn paint(&self, style: Style, text: &str) -> String {
        let text = clean(text);
        if self.color {
            format!("{style}{text}{style:#}")
        } else {
            text.into_owned()
        }
    }

    /// An incident title.
    pub fn title(&self, text: &str) -> String {
        self.paint(TITLE, text)
    }

    /// A path or citation.
    pub fn path(&self, text: &str) -> String {
        self.paint(PATH, text)
    }

    /// A step kind.
    pub fn kind(&self, text: &str) -> String {
        self.paint(KIND, text)
    }

    /// Secondary information (scores, timings).
    pub fn dim(&self, text: &str) -> String {
        self.paint(DIM, text)
    }

    /// A section heading.
    pub fn heading(&self, text: &str) -> String {
        self.paint(HEADING, text)
    }

    /// Flushes, and waits for the pager to quit.
    pub fn finish(mut self) -> io::Result<()> {
        let flushed = self.out.flush();
        drop(self.out);
        if let Some(mut pager) = self.pager.take() {
            let _ = pager.wait();
            // The reader quitting early is not an error.
            return Ok(());
        }
        flushed
    }
}

/// Width of the terminal on stdout, `None` when it is not one (then nothing is wrapped).
fn terminal_width() -> Option<usize> {
    if !io::stdout().is_terminal() {
        return None;
    }
    terminal_size::terminal_size()
        .map(|(w, _)| usize::from(w.0))
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .filter(|&w| w >= 20)
}

/// Splits `text` into lines of at most `widths.0` (first line) and `widths.1` (the others)
/// visible characters, on whitespace; `**` markers take no room. One line when `widths` is
/// `None`. A word longer than a line stands alone on its line.
fn wrap(text: &str, widths: Option<(usize, usize)>) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some((first, rest)) = widths else {
        return if words.is_empty() {
            Vec::new()
        } else {
            vec![words.join(" ")]
        };
    };
    let visible = |w: &str| w.chars().count() - 2 * w.matches("**").count();
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut len = 0;
    for word in words {
        let limit = if lines.is_empty() { first } else { rest };
        let n = visible(word);
        if len > 0 && len + 1 + n > limit {
            lines.push(std::mem::take(&mut line));
            len = 0;
        }
        if len > 0 {
            line.push(' ');
            len += 1;
        }
        line.push_str(word);
        len += n;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `text` with every terminal control character (C0 but newline and tab, DEL, C1) shown as a
/// visible escape such as `\x1b`, so that corpus text and file names can never move the cursor,
/// retitle the window, hide text or ring the bell.
pub fn clean(text: &str) -> Cow<'_, str> {
    let bad = |c: char| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c);
    if !text.chars().any(bad) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if bad(c) {
            let n = c as u32;
            if n <= 0xff {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:04x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Bidirectional overrides and isolates, which reorder what a terminal shows.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `path:18` or `path:18-20`.
pub fn citation(path: &str, start: u32, end: u32) -> String {
    if end <= start {
        format!("{path}:{start}")
    } else {
        format!("{path}:{start}-{end}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(clean("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(clean("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(clean("\u{9b}31m\u{7f}"), "\\x9b31m\\x7f");
        assert_eq!(clean("x\u{202e}y\r"), "x\\u{202e}y\\x0d");
    }

    #[test]
    fn wraps_on_words_and_ignores_markers() {
        assert_eq!(wrap("a  b\nc", None), ["a b c"]);
        assert_eq!(
            wrap("the **quick** brown fox jumps", Some((9, 9))),
            ["the quick", "brown fox", "jumps"]
                .iter()
                .map(|s| s.replace("quick", "**quick**"))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            wrap("supercalifragilistic x", Some((5, 5))),
            ["supercalifragilistic", "x"]
        );
        assert!(wrap("   ", Some((5, 5))).is_empty());
    }

    #[test]
    fn citations_are_copy_pasteable() {
        assert_eq!(citation("a/b.md", 18, 18), "a/b.md:18");
        assert_eq!(citation("a/b.md", 18, 20), "a/b.md:18-20");
    }
}
