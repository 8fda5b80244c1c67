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

mod scanner;
mod string;

use crate::refusal::Code;
use scanner::Scanner;
pub use string::{decoded_offsets, is_noncharacter};

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
    pub fn code(&self) -> Code {
        match self {
            JsonError::Syntax { .. } => Code::MalformedJson,
            JsonError::NumberOutOfRange { .. } => Code::NumberOutOfRange,
            JsonError::LoneSurrogate { .. } => Code::LoneSurrogate,
            JsonError::Noncharacter { .. } => Code::Noncharacter,
            JsonError::DuplicateName { .. } => Code::DuplicateMember,
            JsonError::TooDeep { .. } => Code::TooDeep,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str, depth: usize) -> Result<(), &'static str> {
        check(text, depth).map_err(|e| e.code().as_str())
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
}
