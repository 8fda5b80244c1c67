//! The scanner: one pass over the bytes by JSON's grammar, values, containers and numbers, with
//! the nesting limit and the one-name-once rule of I-JSON; it tells the visitor what it meets.

use std::borrow::Cow;
use std::collections::HashSet;

use super::{JsonError, ScanError, Visitor};

/// Objects with at most this many members find a repeated name by comparing with each earlier
/// one; larger ones keep a set.
const LINEAR_NAMES_MAX: usize = 16;

pub(super) struct Scanner<'a> {
    pub(super) text: &'a str,
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
    pub(super) depth_max: usize,
}

/// The member names an object has shown so far.
#[derive(Default)]
struct SeenNames<'a> {
    /// While few: compared one by one.
    list: Vec<Cow<'a, str>>,
    /// Beyond [`LINEAR_NAMES_MAX`]: a set.
    set: Option<HashSet<Cow<'a, str>>>,
}

impl<'a> SeenNames<'a> {
    /// Adds `name`; whether the object had shown it before.
    fn repeated(&mut self, name: Cow<'a, str>) -> bool {
        if let Some(set) = &mut self.set {
            return !set.insert(name);
        }
        let repeated = self.list.contains(&name);
        self.list.push(name);
        if self.list.len() > LINEAR_NAMES_MAX {
            self.set = Some(self.list.drain(..).collect());
        }
        repeated
    }
}

impl<'a> Scanner<'a> {
    pub(super) fn syntax(&self) -> JsonError {
        JsonError::Syntax { at: self.pos }
    }

    pub(super) fn skip_ws(&mut self) {
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

    /// Steps past `close` if it is next: whether it was.
    fn closes(&mut self, close: u8) -> bool {
        let closes = self.bytes.get(self.pos) == Some(&close);
        if closes {
            self.pos += 1;
        }
        closes
    }

    /// After a container's element: past a comma (`Ok(false)`, another element follows) or
    /// past `close` (`Ok(true)`, the container ends).
    fn next_or_close(&mut self, close: u8) -> Result<bool, JsonError> {
        self.skip_ws();
        if self.closes(close) {
            return Ok(true);
        }
        self.expect(b',')?;
        self.skip_ws();
        Ok(false)
    }

    /// One value at nesting level `depth`; `visit` false while inside a skipped value.
    pub(super) fn value<V: Visitor>(
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

    /// Steps into the object or array at `pos`, at nesting level `depth`: refused beyond
    /// `depth_max`.
    fn open(&mut self, depth: usize) -> Result<(), JsonError> {
        if depth > self.depth_max {
            return Err(JsonError::TooDeep {
                at: self.pos,
                max: self.depth_max,
            });
        }
        self.pos += 1;
        self.skip_ws();
        Ok(())
    }

    fn object<V: Visitor>(
        &mut self,
        depth: usize,
        visitor: &mut V,
        visit: bool,
    ) -> Result<(), ScanError<V::Stop>> {
        self.open(depth)?;
        if visit {
            visitor.enter_object();
        }
        let mut closed = self.closes(b'}');
        let mut names = SeenNames::default();
        while !closed {
            self.member(depth, visitor, visit, &mut names)?;
            closed = self.next_or_close(b'}')?;
        }
        if visit {
            visitor.leave_object();
        }
        Ok(())
    }

    /// One object member, its name not one of `names` (and added to them).
    fn member<V: Visitor>(
        &mut self,
        depth: usize,
        visitor: &mut V,
        visit: bool,
        names: &mut SeenNames<'a>,
    ) -> Result<(), ScanError<V::Stop>> {
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(self.syntax().into());
        }
        let at = self.pos;
        let name = self.string()?;
        if names.repeated(name.text.clone()) {
            return Err(JsonError::DuplicateName {
                at,
                name: name.text.into_owned(),
            }
            .into());
        }
        self.skip_ws();
        self.expect(b':')?;
        self.skip_ws();
        if !visit {
            return self.value(depth, visitor, false);
        }
        let inside = visitor.enter_member(&name).map_err(ScanError::Stopped)?;
        let start = self.pos;
        self.value(depth, visitor, inside)?;
        if !inside {
            visitor.skipped(start..self.pos);
        }
        visitor.leave_member(start..self.pos);
        Ok(())
    }

    fn array<V: Visitor>(
        &mut self,
        depth: usize,
        visitor: &mut V,
        visit: bool,
    ) -> Result<(), ScanError<V::Stop>> {
        self.open(depth)?;
        let mut closed = self.closes(b']');
        while !closed {
            self.value(depth, visitor, visit)?;
            closed = self.next_or_close(b']')?;
        }
        Ok(())
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
}
