//! Decoding bytes into text the rest of the parser can trust, and mapping byte offsets to lines.

use precedent_core::{Diagnostic, DiagnosticCode, Level};

/// Lines longer than this get a diagnostic: they usually mean a minified dump or a pasted blob.
const LONG_LINE: usize = 64 * 1024;

/// Decodes `bytes` to UTF-8 text with `\n` line endings and no BOM. Line numbers are preserved:
/// every line break of the input (LF, CRLF or a lone CR) is exactly one `\n` of the output.
pub(crate) fn decode(bytes: &[u8], diagnostics: &mut Vec<Diagnostic>) -> String {
    let mut bytes = bytes;
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        bytes = rest;
        diagnostics.push(Diagnostic::new(
            Level::Info,
            DiagnosticCode::Bom,
            "removed a UTF-8 byte-order mark",
        ));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(err) => {
            let line = 1 + memchr::memchr_iter(b'\n', &bytes[..err.valid_up_to()]).count();
            diagnostics.push(
                Diagnostic::new(
                    Level::Warning,
                    DiagnosticCode::InvalidUtf8,
                    "invalid UTF-8 replaced with U+FFFD; the file may not be UTF-8 encoded",
                )
                .at_line(line as u32),
            );
            String::from_utf8_lossy(bytes)
        }
    };
    let text = if memchr::memchr(b'\r', text.as_bytes()).is_some() {
        diagnostics.push(Diagnostic::new(
            Level::Info,
            DiagnosticCode::LineEndings,
            "normalised CRLF/CR line endings to LF",
        ));
        normalise_line_endings(&text)
    } else {
        text.into_owned()
    };
    if let Some((line, len)) = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.len()))
        .find(|&(_, len)| len > LONG_LINE)
    {
        diagnostics.push(
            Diagnostic::new(
                Level::Info,
                DiagnosticCode::LongLine,
                format!(
                    "line of {len} bytes; it is split into steps on sentence and word boundaries"
                ),
            )
            .at_line(line as u32),
        );
    }
    text
}

fn normalise_line_endings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' {
            if chars.peek() == Some(&'\n') {
                chars.next();
            }
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    out
}

/// Byte offset -> 1-based line number.
#[derive(Debug)]
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = Vec::with_capacity(text.len() / 40 + 1);
        starts.push(0);
        starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        Self { starts }
    }

    /// Line holding byte `offset`, from 1.
    pub(crate) fn line(&self, offset: usize) -> u32 {
        match self.starts.binary_search(&offset) {
            Ok(i) => i as u32 + 1,
            Err(i) => i as u32,
        }
    }

    /// Number of lines (a trailing newline does not start a new line).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Byte range of line `line` (1-based), without its `\n`.
    #[cfg(test)]
    pub(crate) fn range(&self, text: &str, line: u32) -> std::ops::Range<usize> {
        let i = line as usize - 1;
        let start = self.starts[i];
        let end = self.starts.get(i + 1).map_or(text.len(), |&next| next - 1);
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &[u8], expected: &str, codes: &[DiagnosticCode]) {
        let mut diagnostics = Vec::new();
        assert_eq!(decode(input, &mut diagnostics), expected);
        let got: Vec<_> = diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(got, codes);
    }

    #[test]
    fn decoding_repairs_and_reports() {
        check(b"a\nb", "a\nb", &[]);
        check(
            b"\xEF\xBB\xBFa\r\nb\rc",
            "a\nb\nc",
            &[DiagnosticCode::Bom, DiagnosticCode::LineEndings],
        );
        check(
            b"ok\nbad \xFF here",
            "ok\nbad \u{FFFD} here",
            &[DiagnosticCode::InvalidUtf8],
        );
    }

    #[test]
    fn line_index_maps_offsets() {
        let text = "ab\ncd\n\nef";
        let index = LineIndex::new(text);
        let lines: Vec<u32> = (0..text.len()).map(|i| index.line(i)).collect();
        assert_eq!(lines, [1, 1, 1, 2, 2, 2, 3, 4, 4]);
        assert_eq!(index.len(), 4);
        assert_eq!(&text[index.range(text, 2)], "cd");
        assert_eq!(&text[index.range(text, 4)], "ef");
    }
}
