//! Event validation never panics, and an accepted event keeps the exact bytes it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(event) = mcplog::event::validate(text) {
            assert_eq!(event.body, text);
        }
        let _ = mcplog::event::split_batch(text);
    }
});
