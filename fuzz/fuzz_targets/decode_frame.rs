//! The segment decoder never panics on arbitrary bytes, and whatever frame it accepts survives
//! encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcplog::storage::format::{decode_at, decode_header, encode_frame, Decoded};

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data);
    let mut offset = 0;
    while let Decoded::Frame { frame, end } = decode_at(data, offset) {
        let mut again = Vec::new();
        encode_frame(&frame, &mut again);
        assert_eq!(decode_at(&again, 0), Decoded::Frame { frame: frame.clone(), end: again.len() });
        offset = end;
    }
});
