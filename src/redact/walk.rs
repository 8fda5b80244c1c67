//! The walk over one JSON text (a payload, or JSON held in one of its strings): members under a
//! key name or path are replaced whole, name/value pairs (`{"name": "Authorization", "value":
//! …}`) by their name, and strings are handed to the text rules or read as JSON; what the walk
//! finds is a list of edits to the text's bytes.

use std::collections::BTreeSet;
use std::ops::Range;

use crate::event::json::{self, JsonStr, ScanError, Visitor};
use crate::event::{Invalid, PAYLOAD_DEPTH_MAX};

use super::Redactor;
use crate::refusal::Code;

/// Replace `range` of a JSON text by `text`.
#[derive(Debug)]
pub(super) struct Edit {
    pub(super) range: Range<usize>,
    pub(super) text: String,
}

/// `text` with the edits (in order, not overlapping) applied.
pub(super) fn apply(text: &str, edits: &[Edit]) -> String {
    let mut out = String::with_capacity(text.len() + edits.len() * 32);
    let mut at = 0;
    for edit in edits {
        out.push_str(&text[at..edit.range.start]);
        out.push_str(&edit.text);
        at = edit.range.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `text` as the inside of a JSON string: escaped, without the quotes.
fn string_content(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_owned()
}

/// The marker that replaces a whole value `rule` caught, as a JSON string.
fn marker_value(rule: &str) -> String {
    serde_json::to_string(&format!("[redacted:{rule}]")).expect("a string serializes")
}

impl Redactor {
    /// The edits that redact one JSON text (a payload, or JSON held in one of its strings at
    /// `level` strings deep), the rules that fired added to `fired`.
    pub(super) fn redact_text(
        &self,
        text: &str,
        field: &str,
        path: &str,
        level: usize,
        fired: &mut BTreeSet<String>,
    ) -> Result<Vec<Edit>, Invalid> {
        let mut visitor = Redacting {
            redactor: self,
            text,
            field,
            path: path.to_lowercase(),
            lens: Vec::new(),
            level,
            rule: None,
            members: Vec::new(),
            pairs: Vec::new(),
            edits: Vec::new(),
            fired,
        };
        match json::scan(text, PAYLOAD_DEPTH_MAX, &mut visitor) {
            Ok(()) => {
                // A pair's value found before its name is edited late: back in order.
                visitor.edits.sort_by_key(|edit| edit.range.start);
                Ok(visitor.edits)
            }
            Err(ScanError::Stopped(invalid)) => Err(invalid),
            // Validation read the payload with the same reader, so this is JSON held in a
            // string; either way nothing unread is stored.
            Err(ScanError::Json(err)) => Err(Invalid::field(
                field,
                err.code(),
                format!("{field} holds JSON text that {err}"),
            )),
        }
    }
}

/// The redaction visitor over one JSON text.
pub(super) struct Redacting<'r, 't> {
    pub(super) redactor: &'r Redactor,
    text: &'t str,
    /// The payload field, for refusals.
    pub(super) field: &'r str,
    /// The lowercased dotted path of the member being read.
    pub(super) path: String,
    /// `path`'s length before each member entered.
    lens: Vec<usize>,
    /// How many strings deep this text is.
    pub(super) level: usize,
    /// The rule that fired on the member being skipped.
    rule: Option<String>,
    /// The lowercased name of each member entered and not yet left.
    members: Vec<String>,
    /// For each object open, what its name/value pair members have shown so far.
    pairs: Vec<Pair>,
    edits: Vec<Edit>,
    pub(super) fired: &'r mut BTreeSet<String>,
}

/// Members that name a secret in a name/value pair (`{"name": "Authorization", "value": "…"}`,
/// as HTTP header lists and HAR files write them).
const PAIR_NAME_MEMBERS: [&str; 6] = ["name", "key", "header", "field", "param", "parameter"];
/// Members that hold the value of such a pair.
const PAIR_VALUE_MEMBERS: [&str; 2] = ["value", "val"];

/// One object's name/value pair so far: the rule its name member fired, and the values seen
/// before the name was.
#[derive(Default)]
struct Pair {
    rule: Option<String>,
    values: Vec<Range<usize>>,
}

impl Redacting<'_, '_> {
    /// Replaces a whole value by the marker of `rule`, dropping the edits made inside it.
    fn replace(&mut self, range: Range<usize>, rule: &str) {
        self.edits
            .retain(|edit| edit.range.end <= range.start || edit.range.start >= range.end);
        self.edits.push(Edit {
            range,
            text: marker_value(rule),
        });
        self.fired.insert(rule.to_owned());
    }

    /// Edits of a string token's decoded text (`a..b` in decoded bytes) as edits of the raw
    /// token, keeping every escape outside them as written.
    pub(super) fn lift(&mut self, value: &JsonStr<'_>, inner: Vec<Edit>) {
        let content = value.raw.start + 1;
        let raw = &self.text[content..value.raw.end - 1];
        let map = (!value.is_verbatim()).then(|| json::decoded_offsets(raw));
        let at = |i: usize| content + map.as_ref().map_or(i, |m| m[i]);
        for edit in inner {
            self.edits.push(Edit {
                range: at(edit.range.start)..at(edit.range.end),
                text: string_content(&edit.text),
            });
        }
    }

    /// A pair's name member (`value` its JSON): when it names a key a rule covers, the pair's
    /// values seen so far are replaced, and so are those still to come.
    fn pair_name(&mut self, value: Range<usize>) {
        let rule = serde_json::from_str::<String>(&self.text[value])
            .ok()
            .and_then(|named| self.redactor.key_rule(&named, ""));
        if let (Some(rule), Some(pair)) = (rule, self.pairs.last_mut()) {
            if pair.rule.is_none() {
                let earlier = std::mem::take(&mut pair.values);
                pair.rule = Some(rule.clone());
                for range in earlier {
                    self.replace(range, &rule);
                }
            }
        }
    }

    /// A pair's value member: replaced if its name has been seen to fire, else kept for it.
    fn pair_value(&mut self, value: Range<usize>) {
        match self.pairs.last_mut() {
            Some(Pair {
                rule: Some(rule), ..
            }) => {
                let rule = rule.clone();
                self.replace(value, &rule);
            }
            Some(pair) => pair.values.push(value),
            None => {}
        }
    }
}

impl Visitor for Redacting<'_, '_> {
    type Stop = Invalid;

    fn enter_member(&mut self, name: &JsonStr<'_>) -> Result<bool, Invalid> {
        if let Some(rule) = self.redactor.pattern_in(&name.text) {
            let field = self.field;
            return Err(Invalid::field(
                field,
                Code::SecretInKey,
                format!(
                    "a member name in {field} matches the redaction rule {rule}; a name is never redacted, so the event is refused rather than stored with it"
                ),
            ));
        }
        self.lens.push(self.path.len());
        let lower = name.text.to_lowercase();
        self.path.push('.');
        self.path.push_str(&lower);
        self.members.push(lower);
        self.rule = self.redactor.key_rule(&name.text, &self.path);
        Ok(self.rule.is_none())
    }

    fn skipped(&mut self, value: Range<usize>) {
        let rule = self.rule.take().expect("a skipped member has its rule");
        self.edits.push(Edit {
            range: value,
            text: marker_value(&rule),
        });
        self.fired.insert(rule);
    }

    fn leave_member(&mut self, value: Range<usize>) {
        let len = self.lens.pop().expect("entered before left");
        self.path.truncate(len);
        let name = self.members.pop().expect("entered before left");
        if PAIR_NAME_MEMBERS.contains(&name.as_str()) {
            self.pair_name(value);
        } else if PAIR_VALUE_MEMBERS.contains(&name.as_str()) {
            self.pair_value(value);
        }
    }

    fn enter_object(&mut self) {
        self.pairs.push(Pair::default());
    }

    fn leave_object(&mut self) {
        self.pairs.pop();
    }

    fn string(&mut self, value: &JsonStr<'_>) -> Result<(), Invalid> {
        if self.embedded(value)? {
            return Ok(());
        }
        let inner = self.redactor.text_edits(&value.text, self.fired);
        if !inner.is_empty() {
            self.lift(value, inner);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::redact::tests::{redact, start};
    use crate::redact::RedactionConfig;

    #[test]
    fn keys_of_any_case_at_any_depth_and_in_arrays_are_redacted() {
        let body = start(
            r#"{"user":"ann","PassWord":"hunter2","headers":{"Authorization":"Bearer abcdefghijkl"},
               "items":[{"api_key":"k1"},{"note":"fine"}],"nested":{"deeper":{"Token":{"a":1}}}}"#,
        );
        let event = redact(&RedactionConfig::default(), &body).unwrap();
        let data = &event["request_data"];
        assert_eq!(data["user"], "ann");
        assert_eq!(data["PassWord"], "[redacted:key:password]");
        assert_eq!(
            data["headers"]["Authorization"],
            "[redacted:key:authorization]"
        );
        assert_eq!(data["items"][0]["api_key"], "[redacted:key:api_key]");
        assert_eq!(data["items"][1]["note"], "fine");
        assert_eq!(data["nested"]["deeper"]["Token"], "[redacted:key:token]");
        let rules: Vec<&str> = event["redaction"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(
            rules,
            [
                "key:api_key",
                "key:authorization",
                "key:password",
                "key:token"
            ]
        );
        assert_eq!(event["redaction"]["rule_set"].as_str().unwrap().len(), 16);
        // Every other field as the client sent it.
        assert_eq!(
            (&event["action"], &event["interaction_id"]),
            (&"interaction_start".into(), &"i".into())
        );
    }
}
