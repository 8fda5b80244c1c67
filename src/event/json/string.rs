//! String tokens: decoded in one pass, escapes and surrogate pairs checked, noncharacters
//! refused; and the map from decoded bytes back to the raw text that redaction edits through.

use std::borrow::Cow;

use super::scanner::Scanner;
use super::{JsonError, JsonStr};

impl<'a> Scanner<'a> {
    /// A string token at `pos` (its opening quote), decoded.
    pub(super) fn string(&mut self) -> Result<JsonStr<'a>, JsonError> {
        let start = self.pos;
        self.pos += 1;
        let content = self.pos;
        let mut decoded: Option<String> = None;
        let mut copied = content;
        loop {
            // The next quote, backslash or control byte; everything before it is plain text.
            let rest = &self.bytes[self.pos..];
            let Some(offset) = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20 || b == 0xEF)
            else {
                return Err(JsonError::Syntax {
                    at: self.bytes.len(),
                });
            };
            self.pos += offset;
            match self.bytes[self.pos] {
                b'"' => break,
                b'\\' => {
                    let out = decoded.get_or_insert_with(String::new);
                    out.push_str(&self.text[copied..self.pos]);
                    self.escape(out)?;
                    copied = self.pos;
                }
                0xEF => {
                    // U+FDD0–U+FDEF and U+FFFE/U+FFFF begin with 0xEF in UTF-8; other
                    // noncharacters (U+1FFFE ...) begin with 0xF0–0xF4, checked below.
                    self.check_char_at(self.pos)?;
                    self.pos += 3;
                }
                _ => return Err(self.syntax()),
            }
        }
        // Four-byte sequences can be noncharacters too (U+1FFFE, U+10FFFF, ...).
        let plain = &self.bytes[content..self.pos];
        if plain.iter().any(|&b| b >= 0xF0) {
            for (i, c) in self.text[content..self.pos].char_indices() {
                if u32::from(c) > 0xFFFF && is_noncharacter(u32::from(c)) {
                    return Err(JsonError::Noncharacter {
                        at: content + i,
                        code: u32::from(c),
                    });
                }
            }
        }
        let text = match decoded {
            None => Cow::Borrowed(&self.text[content..self.pos]),
            Some(mut out) => {
                out.push_str(&self.text[copied..self.pos]);
                Cow::Owned(out)
            }
        };
        self.pos += 1;
        Ok(JsonStr {
            raw: start..self.pos,
            text,
        })
    }

    fn check_char_at(&self, at: usize) -> Result<(), JsonError> {
        if let Some(c) = self.text[at..].chars().next() {
            if is_noncharacter(u32::from(c)) {
                return Err(JsonError::Noncharacter {
                    at,
                    code: u32::from(c),
                });
            }
        }
        Ok(())
    }

    /// One escape at `pos` (its backslash), appended decoded to `out`.
    fn escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let at = self.pos;
        let Some(&kind) = self.bytes.get(self.pos + 1) else {
            return Err(self.syntax());
        };
        self.pos += 2;
        let simple = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if self.bytes.get(self.pos) != Some(&b'\\')
                            || self.bytes.get(self.pos + 1) != Some(&b'u')
                        {
                            return Err(JsonError::LoneSurrogate { at });
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(JsonError::LoneSurrogate { at });
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(JsonError::LoneSurrogate { at }),
                    code => code,
                };
                if is_noncharacter(code) {
                    return Err(JsonError::Noncharacter { at, code });
                }
                char::from_u32(code).ok_or(JsonError::LoneSurrogate { at })?
            }
            _ => return Err(JsonError::Syntax { at }),
        };
        out.push(simple);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or(JsonError::Syntax { at: self.pos })?;
        let mut code = 0u32;
        for &d in digits {
            let value = (d as char)
                .to_digit(16)
                .ok_or(JsonError::Syntax { at: self.pos })?;
            code = code * 16 + value;
        }
        self.pos += 4;
        Ok(code)
    }
}

/// Unicode's noncharacters: U+FDD0–U+FDEF and the last two code points of every plane.
pub fn is_noncharacter(code: u32) -> bool {
    (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

/// For a string token's raw text between its quotes, the raw offset at which the source of each
/// decoded byte begins, plus one entry for the end: decoded byte `i` comes from the escape or
/// character that starts at raw offset `map[i]`. An edit of decoded bytes `a..b` is then an edit
/// of raw bytes `map[a]..map[b]`, leaving every other escape as the client wrote it.
/// `raw` must be a string's content that [`scan`] accepted.
pub fn decoded_offsets(raw: &str) -> Vec<usize> {
    let bytes = raw.as_bytes();
    let mut map = Vec::with_capacity(raw.len() + 1);
    let mut pos = 0;
    let mut buf = [0u8; 4];
    while pos < bytes.len() {
        if bytes[pos] != b'\\' {
            map.push(pos);
            pos += 1;
            continue;
        }
        let (len, decoded_len) = match bytes[pos + 1] {
            b'u' => {
                let first = u32::from_str_radix(&raw[pos + 2..pos + 6], 16).unwrap_or(0);
                if (0xD800..=0xDBFF).contains(&first) {
                    (12, 4)
                } else {
                    let c = char::from_u32(first).unwrap_or('\u{FFFD}');
                    (6, c.encode_utf8(&mut buf).len())
                }
            }
            _ => (2, 1),
        };
        map.extend(std::iter::repeat_n(pos, decoded_len));
        pos += len;
    }
    map.push(bytes.len());
    map
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;
    use crate::event::json::{scan, Visitor};

    /// Every accepted text parses in serde_json, and what we decode is what it decodes.
    #[test]
    fn decoding_agrees_with_serde_json_and_offsets_map_back() {
        let raw = r#"a\"b\\c\/d\u00e9e\ud83d\ude00f\n"#;
        let text = format!("\"{raw}\"");
        struct Strings(Vec<String>);
        impl Visitor for Strings {
            type Stop = ();
            fn enter_member(&mut self, _: &JsonStr<'_>) -> Result<bool, ()> {
                Ok(true)
            }
            fn skipped(&mut self, _: Range<usize>) {}
            fn leave_member(&mut self, _: Range<usize>) {}
            fn string(&mut self, value: &JsonStr<'_>) -> Result<(), ()> {
                self.0.push(value.text.to_string());
                Ok(())
            }
        }
        let mut seen = Strings(Vec::new());
        scan(&text, 1, &mut seen).unwrap();
        let expected: String = serde_json::from_str(&text).unwrap();
        assert_eq!(seen.0, std::slice::from_ref(&expected));
        let map = decoded_offsets(raw);
        assert_eq!(map.len(), expected.len() + 1);
        // 'c' is decoded byte 3 ("a", "\"", "b", "\\" come before it: 4 bytes) ...
        let c = expected.find('c').unwrap();
        assert_eq!(&raw[map[c]..map[c] + 1], "c");
        let e_acute = expected.find('é').unwrap();
        assert_eq!(&raw[map[e_acute]..map[e_acute + 2]], r"\u00e9");
        let emoji = expected.find('😀').unwrap();
        assert_eq!(&raw[map[emoji]..map[emoji + 4]], r"\ud83d\ude00");
        assert_eq!(map[expected.len()], raw.len());
    }
}
