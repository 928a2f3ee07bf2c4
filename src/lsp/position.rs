//! Byte offsets (the front end's spans) to protocol positions and back. The
//! protocol counts columns in UTF-16 code units and ends lines at `\n`,
//! `\r\n` or a lone `\r`; a comment with `é` or an emoji before a position
//! changes its column, not its byte offset.

use lsp_types::{Position, Range};

use crate::span::Span;

/// Where each line of a text starts.
pub struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub fn new(text: &str) -> Lines {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        for (i, &b) in bytes.iter().enumerate() {
            let ends_line = b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
            if ends_line {
                starts.push(i + 1);
            }
        }
        Lines { starts }
    }

    pub fn position(&self, text: &str, offset: usize) -> Position {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let character = text[start..offset].encode_utf16().count();
        Position::new(line as u32, character as u32)
    }

    pub fn range(&self, text: &str, span: Span) -> Range {
        Range::new(
            self.position(text, span.start),
            self.position(text, span.end),
        )
    }

    /// The byte offset of a position; past the end of a line (or of the
    /// text), the end of that line (of the text), as the protocol asks.
    pub fn offset(&self, text: &str, pos: Position) -> usize {
        let Some(&start) = self.starts.get(pos.line as usize) else {
            return text.len();
        };
        let end = self.line_end(text, pos.line as usize);
        let mut units = 0usize;
        for (i, c) in text[start..end].char_indices() {
            if units >= pos.character as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        end
    }

    /// The end of line `line`, before its line break.
    fn line_end(&self, text: &str, line: usize) -> usize {
        let next = self.starts.get(line + 1).copied().unwrap_or(text.len());
        let content = &text[self.starts[line]..next];
        self.starts[line] + content.trim_end_matches(['\n', '\r']).len()
    }
}

/// The start of the character that holds byte `i`.
pub fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_utf16_units() {
        // `é` is 2 bytes and 1 unit, `😀` 4 bytes and 2 units.
        let text = "# é😀\nsqueeze # 😀x\r\nlast\rline";
        let lines = Lines::new(text);
        let x = text.find('x').unwrap();
        assert_eq!(lines.position(text, x), Position::new(1, 12));
        assert_eq!(lines.offset(text, Position::new(1, 12)), x);
        let end_of_first = text.find('\n').unwrap();
        assert_eq!(lines.position(text, end_of_first), Position::new(0, 5));
        assert_eq!(lines.offset(text, Position::new(0, 99)), end_of_first);
        assert_eq!(
            lines.offset(text, Position::new(3, 0)),
            text.find("line").unwrap()
        );
        assert_eq!(lines.offset(text, Position::new(9, 0)), text.len());
        // Inside a surrogate pair: the start of its character.
        assert_eq!(lines.position(text, 6), Position::new(0, 3));
    }
}
