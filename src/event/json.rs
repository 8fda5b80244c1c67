//! A strict reader of payload JSON: I-JSON (RFC 7493) and nothing else, in one pass over the
//! bytes, with a visitor for the parts redaction needs (member names, strings, and where each
//! value lies in the text).
//!
//! Validation and redaction both read payloads through it, so they cannot disagree on what a
//! payload holds: whatever validation accepts, redaction can read to the end (a disagreement
//! here once let a payload the redactor could not parse be stored with its secret in clear).
//! What it refuses beyond JSON's grammar is what strict consumers refuse: numbers that overflow
//! an IEEE 754 double, unpaired surrogate escapes, noncharacters, an object naming one member
//! twice, and nesting deeper than the limit it is given.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// Why a text is not acceptable I-JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all.
    Syntax {
        /// The byte offset where reading stopped.
        at: usize,
    },
    /// A number whose magnitude overflows a 64-bit float (`1e400`).
    NumberOutOfRange {
        /// Where the number starts.
        at: usize,
        /// The number as written.
        text: String,
    },
    /// A `\uD800`–`\uDFFF` escape without its other half.
    LoneSurrogate {
        /// Where the escape starts.
        at: usize,
    },
    /// A noncharacter (U+FDD0–U+FDEF, U+xFFFE, U+xFFFF), escaped or not.
    Noncharacter {
        /// Where it starts.
        at: usize,
        /// The code point.
        code: u32,
    },
    /// An object that names one member twice.
    DuplicateName {
        /// Where the second name starts.
        at: usize,
        /// The name, decoded.
        name: String,
    },
    /// Objects and arrays nested deeper than the limit.
    TooDeep {
        /// Where the first container past the limit starts.
        at: usize,
        /// The limit.
        max: usize,
    },
}

impl JsonError {
    /// A stable code for the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            JsonError::Syntax { .. } => "malformed_json",
            JsonError::NumberOutOfRange { .. } => "number_out_of_range",
            JsonError::LoneSurrogate { .. } => "lone_surrogate",
            JsonError::Noncharacter { .. } => "noncharacter",
            JsonError::DuplicateName { .. } => "duplicate_member",
            JsonError::TooDeep { .. } => "too_deep",
        }
    }

    /// Whether the text was JSON that I-JSON refuses, rather than not JSON at all.
    pub fn is_strictness(&self) -> bool {
        !matches!(self, JsonError::Syntax { .. })
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax { at } => write!(f, "is not valid JSON (at byte {at})"),
            JsonError::NumberOutOfRange { at, text } => write!(
                f,
                "holds the number {} (at byte {at}), beyond the range of a 64-bit float; send it as a string",
                super::validate::shown(text)
            ),
            JsonError::LoneSurrogate { at } => write!(
                f,
                "holds an unpaired surrogate escape (at byte {at}), which is no Unicode text"
            ),
            JsonError::Noncharacter { at, code } => write!(
                f,
                "holds the noncharacter U+{code:04X} (at byte {at}), which I-JSON refuses"
            ),
            JsonError::DuplicateName { at, name } => write!(
                f,
                "names the member {:?} twice in one object (at byte {at})",
                super::validate::shown(name)
            ),
            JsonError::TooDeep { at, max } => write!(
                f,
                "nests objects and arrays deeper than {max} levels (at byte {at})"
            ),
        }
    }
}

/// A string token: where it lies in the text (quotes included) and what it says.
#[derive(Debug)]
pub struct JsonStr<'a> {
    /// The token's bytes in the text, from its opening quote to just past its closing one.
    pub raw: Range<usize>,
    /// The decoded text; borrowed when the token holds no escape.
    pub text: Cow<'a, str>,
}

impl JsonStr<'_> {
    /// Whether the decoded text is the raw text between the quotes.
    pub fn is_verbatim(&self) -> bool {
        matches!(self.text, Cow::Borrowed(_))
    }
}

/// What a reader of the text is told, in document order.
pub trait Visitor {
    /// Why the visitor stops the scan.
    type Stop;
    /// An object member's name. `Ok(false)` skips its value: the scanner still checks it, then
    /// calls [`Visitor::skipped`] with its range.
    fn enter_member(&mut self, name: &JsonStr<'_>) -> Result<bool, Self::Stop>;
    /// The range of a member's value that [`Visitor::enter_member`] chose to skip.
    fn skipped(&mut self, value: Range<usize>);
    /// The end of the member last entered, and where its value lies.
    fn leave_member(&mut self, value: Range<usize>);
    /// An object begins (only where values are visited).
    fn enter_object(&mut self) {}
    /// The object last begun ends.
    fn leave_object(&mut self) {}
    /// A string value (not a member name).
    fn string(&mut self, value: &JsonStr<'_>) -> Result<(), Self::Stop>;
}

/// A visitor that is told nothing: validation alone.
pub struct CheckOnly;

impl Visitor for CheckOnly {
    type Stop = std::convert::Infallible;
    fn enter_member(&mut self, _: &JsonStr<'_>) -> Result<bool, Self::Stop> {
        Ok(true)
    }
    fn skipped(&mut self, _: Range<usize>) {}
    fn leave_member(&mut self, _: Range<usize>) {}
    fn string(&mut self, _: &JsonStr<'_>) -> Result<(), Self::Stop> {
        Ok(())
    }
}

/// Why a scan stopped.
#[derive(Debug)]
pub enum ScanError<S> {
    /// The text is not I-JSON.
    Json(JsonError),
    /// The visitor stopped it.
    Stopped(S),
}

impl<S> From<JsonError> for ScanError<S> {
    fn from(err: JsonError) -> Self {
        ScanError::Json(err)
    }
}

/// Checks that `text` is one I-JSON value (white space around it allowed) nesting objects and
/// arrays at most `depth_max` levels deep (a scalar is level 0), telling `visitor` what it
/// meets.
pub fn scan<V: Visitor>(
    text: &str,
    depth_max: usize,
    visitor: &mut V,
) -> Result<(), ScanError<V::Stop>> {
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth_max,
    };
    scanner.skip_ws();
    scanner.value(0, visitor, true)?;
    scanner.skip_ws();
    if scanner.pos != scanner.bytes.len() {
        return Err(JsonError::Syntax { at: scanner.pos }.into());
    }
    Ok(())
}

/// Checks `text` without a visitor.
pub fn check(text: &str, depth_max: usize) -> Result<(), JsonError> {
    scan(text, depth_max, &mut CheckOnly).map_err(|err| match err {
        ScanError::Json(err) => err,
        ScanError::Stopped(never) => match never {},
    })
}

/// Objects with at most this many members find a repeated name by comparing with each earlier
/// one; larger ones keep a set.
const LINEAR_NAMES_MAX: usize = 16;

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth_max: usize,
}

impl<'a> Scanner<'a> {
    fn syntax(&self) -> JsonError {
        JsonError::Syntax { at: self.pos }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), JsonError> {
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// One value at nesting level `depth`; `visit` false while inside a skipped value.
    fn value<V: Visitor>(
        &mut self,
        depth: usize,
        visitor: &mut V,
        visit: bool,
    ) -> Result<(), ScanError<V::Stop>> {
        match self.bytes.get(self.pos) {
            Some(b'{') => self.object(depth + 1, visitor, visit),
            Some(b'[') => self.array(depth + 1, visitor, visit),
            Some(b'"') => {
                let string = self.string()?;
                if visit {
                    visitor.string(&string).map_err(ScanError::Stopped)?;
                }
                Ok(())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => Ok(self.number()?),
            _ => Err(self.syntax().into()),
        }
    }

    fn literal<S>(&mut self, word: &[u8]) -> Result<(), ScanError<S>> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.syntax().into())
        }
    }

    fn enter(&self, depth: usize) -> Result<(), JsonError> {
        if depth > self.depth_max {
            return Err(JsonError::TooDeep {
                at: self.pos,
                max: self.depth_max,
            });
        }
        Ok(())
    }

    fn object<V: Visitor>(
        &mut self,
        depth: usize,
        visitor: &mut V,
        visit: bool,
    ) -> Result<(), ScanError<V::Stop>> {
        self.enter(depth)?;
        self.pos += 1;
        self.skip_ws();
        if visit {
            visitor.enter_object();
        }
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            if visit {
                visitor.leave_object();
            }
            return Ok(());
        }
        let mut names: Vec<Cow<'a, str>> = Vec::new();
        let mut set: Option<std::collections::HashSet<Cow<'a, str>>> = None;
        loop {
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(self.syntax().into());
            }
            let at = self.pos;
            let name = self.string()?;
            let repeated = match &mut set {
                Some(set) => !set.insert(name.text.clone()),
                None => {
                    let repeated = names.contains(&name.text);
                    names.push(name.text.clone());
                    if names.len() > LINEAR_NAMES_MAX {
                        set = Some(names.drain(..).collect());
                    }
                    repeated
                }
            };
            if repeated {
                return Err(JsonError::DuplicateName {
                    at,
                    name: name.text.into_owned(),
                }
                .into());
            }
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            if visit {
                let inside = visitor.enter_member(&name).map_err(ScanError::Stopped)?;
                let start = self.pos;
                self.value(depth, visitor, inside)?;
                if !inside {
                    visitor.skipped(start..self.pos);
                }
                visitor.leave_member(start..self.pos);
            } else {
                self.value(depth, visitor, false)?;
            }
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.pos += 1;
                    if visit {
                        visitor.leave_object();
                    }
                    return Ok(());
                }
                _ => return Err(self.syntax().into()),
            }
        }
    }

    fn array<V: Visitor>(
        &mut self,
        depth: usize,
        visitor: &mut V,
        visit: bool,
    ) -> Result<(), ScanError<V::Stop>> {
        self.enter(depth)?;
        self.pos += 1;
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.value(depth, visitor, visit)?;
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => {
                    self.pos += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax().into()),
            }
        }
    }

    /// A number, by JSON's grammar; refused if its magnitude overflows a double.
    fn number(&mut self) -> Result<(), JsonError> {
        let start = self.pos;
        let digits = |s: &mut Self| {
            let from = s.pos;
            while let Some(b'0'..=b'9') = s.bytes.get(s.pos) {
                s.pos += 1;
            }
            s.pos - from
        };
        if self.bytes[self.pos] == b'-' {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_digits = digits(self);
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return Err(self.syntax());
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.syntax());
            }
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            exponent = true;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.syntax());
            }
        }
        // Without an exponent, fewer than 309 integer digits always fit (f64::MAX ~ 1.8e308).
        if exponent || int_digits > 308 {
            let text = &self.text[start..self.pos];
            let value: f64 = text.parse().map_err(|_| JsonError::Syntax { at: start })?;
            if !value.is_finite() {
                return Err(JsonError::NumberOutOfRange {
                    at: start,
                    text: text.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// A string token at `pos` (its opening quote), decoded.
    fn string(&mut self) -> Result<JsonStr<'a>, JsonError> {
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
    use super::*;

    fn code(text: &str, depth: usize) -> Result<(), &'static str> {
        check(text, depth).map_err(|e| e.code())
    }

    #[test]
    fn accepts_json_and_refuses_what_i_json_refuses() {
        for good in [
            "{}",
            "[]",
            " {\"a\": [1, -0, 1e2, 1.5E-3, 0.0, 123456789012345678901234567890, true, false, null, \"x\\\"\\u00e9\\ud83d\\ude00\"]} ",
            "1e308",
            "-1.7976931348623157e308",
            "1e-400",
            "\"\u{10FFFD}\"",
        ] {
            assert_eq!(code(good, 128), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("1e400", "number_out_of_range"),
            ("-2e308", "number_out_of_range"),
            ("{\"n\":1e999999999999}", "number_out_of_range"),
            (&format!("1{}", "0".repeat(309)), "number_out_of_range"),
            ("\"\\ud800\"", "lone_surrogate"),
            ("\"\\udc00\"", "lone_surrogate"),
            ("\"\\ud800\\u0041\"", "lone_surrogate"),
            ("\"\\ud800x\"", "lone_surrogate"),
            ("\"\\ufdd0\"", "noncharacter"),
            ("\"\u{FFFF}\"", "noncharacter"),
            ("\"\u{1FFFE}\"", "noncharacter"),
            ("\"\\uffff\"", "noncharacter"),
            ("{\"a\":1,\"a\":2}", "duplicate_member"),
            ("{\"a\":1,\"\\u0061\":2}", "duplicate_member"),
            ("{\"a\":1,\"b\":{\"c\":1,\"c\":1}}", "duplicate_member"),
            ("01", "malformed_json"),
            ("1.", "malformed_json"),
            ("[1,]", "malformed_json"),
            ("{\"a\" 1}", "malformed_json"),
            ("\"a\nb\"", "malformed_json"),
            ("\"\\x\"", "malformed_json"),
            ("{} {}", "malformed_json"),
            ("", "malformed_json"),
            ("[tru]", "malformed_json"),
        ] {
            assert_eq!(code(bad, 128), Err(why), "{bad}");
        }
        // A repeated name in an object larger than the linear search's reach.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let text = format!("{{{},\"k3\":0}}", many.join(","));
        assert_eq!(code(&text, 128), Err("duplicate_member"));
        assert_eq!(code(&format!("{{{}}}", many.join(",")), 128), Ok(()));
    }

    #[test]
    fn depth_is_counted_from_the_outermost_container() {
        let nested = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        assert_eq!(code(&nested(5), 5), Ok(()));
        assert_eq!(code(&nested(6), 5), Err("too_deep"));
        assert_eq!(code("1", 0), Ok(()));
        assert_eq!(code("{\"a\":{\"b\":[{}]}}", 4), Ok(()));
        assert_eq!(code("{\"a\":{\"b\":[{}]}}", 3), Err("too_deep"));
    }

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
