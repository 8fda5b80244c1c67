//! Event validation never panics; an accepted event keeps the exact bytes it was given and
//! parses in serde_json (strict about numbers and surrogates); redaction of an accepted event
//! never panics, and what it would store parses too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcplog::redact::{RedactionConfig, Redactor};

fn redactor() -> &'static Redactor {
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    REDACTOR.get_or_init(|| Redactor::new(&RedactionConfig::default()).expect("the defaults compile"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(event) = mcplog::event::validate(text) {
            assert_eq!(event.body, text);
            serde_json::from_str::<serde_json::Value>(text).expect("an accepted event parses");
            if let Ok(Some(body)) = redactor().redacted_body(&event) {
                serde_json::from_str::<serde_json::Value>(&body).expect("a redacted event parses");
            }
        }
        let _ = mcplog::event::split_batch(text, 1000);
    }
});
