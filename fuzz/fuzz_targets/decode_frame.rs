//! The segment decoder never panics on arbitrary bytes, and whatever header or frame it accepts
//! survives encode → decode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcplog::storage::format::{
    decode_at, decode_header, encode_frame, encode_header, Decoded, HEADER_BYTES,
};

fuzz_target!(|data: &[u8]| {
    // Inputs that start with a valid header (a whole segment file, say) are read as one; any other
    // input is read as frames from its first byte.
    let mut offset = 0;
    if let Ok(header) = decode_header(data) {
        assert_eq!(decode_header(&encode_header(&header)), Ok(header));
        offset = HEADER_BYTES;
    }
    while let Decoded::Frame { frame, end } = decode_at(data, offset) {
        let mut again = Vec::new();
        encode_frame(&frame, &mut again);
        assert_eq!(
            decode_at(&again, 0),
            Decoded::Frame { frame: frame.clone(), end: again.len() }
        );
        offset = end;
    }
});
