//! The byte layout of a segment file, and the pure functions that encode and decode it.
//!
//! `storage-format.md` at the repository root is the normative description; this comment restates
//! it so the code can be read alone. Every integer is little-endian.
//!
//! ```text
//! segment = header frame* footer?
//!
//! header (68 bytes)
//!   0   8  magic          89 4D 43 50 4C 4F 47 0A   ("\x89MCPLOG\n")
//!   8   2  version        u16 = 1
//!  10   2  flags          u16 = 0
//!  12   4  reserved       u32 = 0
//!  16   8  first_seq      u64, the seq of the first frame (also the file name)
//!  24   8  created_at_us  u64, server clock when the segment was opened (microseconds)
//!  32  32  prev_hash      SHA-256 chain hash of the previous segment, zeros for the first one
//!  64   4  header_crc     CRC-32/IEEE of bytes 0..64
//!
//! frame (8 + len bytes)
//!   0   4  len            u32, payload length, 1..=FRAME_PAYLOAD_BYTES_MAX
//!   4   4  crc            CRC-32/IEEE of the 4 len bytes followed by the payload
//!   8 len  payload        postcard encoding of `StoredEvent`
//!
//! footer (80 bytes, only on sealed segments)
//!   0   4  marker         u32 = 0xFFFF_FFFF (never a valid frame length)
//!   4   4  footer_crc     CRC-32/IEEE of footer bytes 8..80
//!   8   8  last_seq       u64
//!  16   8  data_end       u64, file offset where the footer starts
//!  24   8  received_min_us u64, oldest receive time in the segment
//!  32   8  received_max_us u64, newest receive time in the segment (retention uses it)
//!  40   8  reserved       u64 = 0
//!  48  32  segment_hash   SHA-256 of header bytes 0..68 and every frame byte up to data_end
//! ```
//!
//! Decoding never panics on any input: it returns a [`Decoded`] value that says whether the bytes
//! hold a frame, a footer, too few bytes (`Incomplete`) or bytes that cannot be right (`Corrupt`).

use crate::event::{StoredEvent, EVENT_ID_BYTES_MAX, ID_BYTES_MAX};
use std::ops::Range;

/// The 8 magic bytes that open every segment. The high first byte catches 7-bit transfers and the
/// trailing newline catches newline translation, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"\x89MCPLOG\n";
/// The only format version this build reads and writes.
pub const VERSION: u16 = 1;

// Where each header field sits, as storage-format.md's table gives it. (Flags, 10..12, and the
// reserved bytes, 12..16, are zero.)
const HEADER_MAGIC: Range<usize> = 0..8;
const HEADER_VERSION: Range<usize> = 8..10;
const HEADER_FIRST_SEQ: Range<usize> = 16..24;
const HEADER_CREATED: Range<usize> = 24..32;
const HEADER_PREV_HASH: Range<usize> = 32..64;
const HEADER_CRC: Range<usize> = 64..68;
/// Size of the segment header in bytes.
pub const HEADER_BYTES: usize = HEADER_CRC.end;
const _: () = assert!(HEADER_BYTES == 68);

/// Bytes before a frame's payload: the length and the CRC.
pub const FRAME_HEADER_BYTES: usize = 8;
/// The largest payload a frame may carry. Events are limited far below this by the API
/// (`event_bytes_max`); this bound only protects the decoder from absurd lengths.
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = 64 * 1024 * 1024;

/// The length value that marks a footer instead of a frame.
pub const FOOTER_MARKER: u32 = u32::MAX;
const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX < FOOTER_MARKER);
// Where each footer field sits, as storage-format.md's table gives it. (Bytes 40..48 are
// reserved, zero.)
const FOOTER_MARK: Range<usize> = 0..4;
const FOOTER_CRC: Range<usize> = 4..8;
const FOOTER_LAST_SEQ: Range<usize> = 8..16;
const FOOTER_DATA_END: Range<usize> = 16..24;
const FOOTER_RECV_MIN: Range<usize> = 24..32;
const FOOTER_RECV_MAX: Range<usize> = 32..40;
const FOOTER_HASH: Range<usize> = 48..80;
/// Size of the footer of a sealed segment in bytes.
pub const FOOTER_BYTES: usize = FOOTER_HASH.end;
const _: () = assert!(FOOTER_BYTES == 80);

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The fixed fields at the start of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Seq of the first frame this segment holds (or will hold).
    pub first_seq: u64,
    /// Server clock when the segment was created, in microseconds since the Unix epoch.
    pub created_at_us: u64,
    /// Chain hash of the previous segment; all zeros for the first segment of a log.
    pub prev_hash: Hash,
}

/// The trailer written when a segment is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Seq of the last frame in the segment.
    pub last_seq: u64,
    /// File offset where the footer starts, i.e. the end of the last frame.
    pub data_end: u64,
    /// Oldest server receive time of any frame in the segment, in microseconds.
    pub received_min_us: u64,
    /// Newest server receive time of any frame in the segment, in microseconds.
    pub received_max_us: u64,
    /// SHA-256 over the header and every frame byte; the next segment's `prev_hash`.
    pub segment_hash: Hash,
}

/// Why bytes could not be a valid header, frame or footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The first 8 bytes are not [`MAGIC`].
    BadMagic,
    /// The header names a version this build does not know.
    UnsupportedVersion(u16),
    /// A stored CRC does not match the bytes it covers.
    CrcMismatch,
    /// A frame length of zero or above [`FRAME_PAYLOAD_BYTES_MAX`].
    BadLength(u32),
    /// The CRC matched but the payload does not decode as an event frame.
    BadPayload,
}

impl std::fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorruptKind::BadMagic => write!(f, "bad magic bytes"),
            CorruptKind::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            CorruptKind::CrcMismatch => write!(f, "CRC mismatch"),
            CorruptKind::BadLength(len) => write!(f, "impossible frame length {len}"),
            CorruptKind::BadPayload => write!(f, "frame payload does not decode"),
        }
    }
}

/// What the bytes at one offset of a segment hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<'a> {
    /// A whole, valid frame, and the offset just past it.
    Frame {
        /// The decoded event, borrowing from the bytes.
        frame: StoredEvent<'a>,
        /// Offset just past the frame.
        end: usize,
    },
    /// A whole, valid footer.
    Footer(Footer),
    /// The bytes end before the structure does: a torn write, or simply the end of the data.
    Incomplete,
    /// The bytes are all there but cannot be right.
    Corrupt(CorruptKind),
}

/// Encodes a segment header.
pub fn encode_header(header: &Header) -> [u8; HEADER_BYTES] {
    let mut out = [0u8; HEADER_BYTES];
    out[HEADER_MAGIC].copy_from_slice(&MAGIC);
    out[HEADER_VERSION].copy_from_slice(&VERSION.to_le_bytes());
    out[HEADER_FIRST_SEQ].copy_from_slice(&header.first_seq.to_le_bytes());
    out[HEADER_CREATED].copy_from_slice(&header.created_at_us.to_le_bytes());
    out[HEADER_PREV_HASH].copy_from_slice(&header.prev_hash);
    let crc = crc32fast::hash(&out[..HEADER_CRC.start]);
    out[HEADER_CRC].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a segment header from the start of `bytes`.
pub fn decode_header(bytes: &[u8]) -> Result<Header, Option<CorruptKind>> {
    let Some(raw) = bytes.get(..HEADER_BYTES) else {
        return Err(None);
    };
    if raw[HEADER_MAGIC] != MAGIC {
        return Err(Some(CorruptKind::BadMagic));
    }
    let stored_crc = read_u32(raw, HEADER_CRC.start);
    if crc32fast::hash(&raw[..HEADER_CRC.start]) != stored_crc {
        return Err(Some(CorruptKind::CrcMismatch));
    }
    let version = u16::from_le_bytes([raw[HEADER_VERSION.start], raw[HEADER_VERSION.start + 1]]);
    if version != VERSION {
        return Err(Some(CorruptKind::UnsupportedVersion(version)));
    }
    let mut prev_hash = [0u8; 32];
    prev_hash.copy_from_slice(&raw[HEADER_PREV_HASH]);
    Ok(Header {
        first_seq: read_u64(raw, HEADER_FIRST_SEQ.start),
        created_at_us: read_u64(raw, HEADER_CREATED.start),
        prev_hash,
    })
}

/// Appends one encoded frame to `out`.
///
/// Panics if the payload would exceed [`FRAME_PAYLOAD_BYTES_MAX`]: callers bound events far below
/// it, so reaching it is a programming error.
pub fn encode_frame(frame: &StoredEvent<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    let out_taken = std::mem::take(out);
    let mut encoded =
        postcard::to_extend(frame, out_taken).expect("encoding into a Vec cannot fail");
    let len = encoded.len() - start - FRAME_HEADER_BYTES;
    assert!(
        len > 0 && len <= FRAME_PAYLOAD_BYTES_MAX as usize,
        "frame payload of {len} bytes"
    );
    let len = len as u32;
    encoded[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&encoded[start + FRAME_HEADER_BYTES..]);
    encoded[start + 4..start + 8].copy_from_slice(&hasher.finalize().to_le_bytes());
    *out = encoded;
}

/// Where the frame at `offset` ends, from its length prefix alone (no CRC check): for walking
/// frames already checked. `None` if the prefix is not there or is not a frame length.
pub fn frame_end(bytes: &[u8], offset: usize) -> Option<usize> {
    let len = read_u32(bytes.get(offset..offset + 4)?, 0);
    (len != 0 && len <= FRAME_PAYLOAD_BYTES_MAX).then(|| offset + FRAME_HEADER_BYTES + len as usize)
}

/// Decodes whatever starts at `offset` of a segment: a frame, a footer, or the reason it is not one.
pub fn decode_at(bytes: &[u8], offset: usize) -> Decoded<'_> {
    let Some(rest) = bytes.get(offset..) else {
        return Decoded::Incomplete;
    };
    if rest.len() < 4 {
        return Decoded::Incomplete;
    }
    let len = read_u32(rest, 0);
    if len == FOOTER_MARKER {
        return decode_footer(rest);
    }
    if len == 0 || len > FRAME_PAYLOAD_BYTES_MAX {
        return Decoded::Corrupt(CorruptKind::BadLength(len));
    }
    let total = FRAME_HEADER_BYTES + len as usize;
    let Some(raw) = rest.get(..total) else {
        return Decoded::Incomplete;
    };
    let stored_crc = read_u32(raw, 4);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&raw[..4]);
    hasher.update(&raw[FRAME_HEADER_BYTES..]);
    if hasher.finalize() != stored_crc {
        return Decoded::Corrupt(CorruptKind::CrcMismatch);
    }
    match postcard::from_bytes::<StoredEvent<'_>>(&raw[FRAME_HEADER_BYTES..]) {
        Ok(frame) if ids_in_range(&frame) => Decoded::Frame {
            frame,
            end: offset + total,
        },
        _ => Decoded::Corrupt(CorruptKind::BadPayload),
    }
}

/// Whether a frame's ids have the lengths the format allows (the API's limits): a frame outside
/// them was not written by mcplog, and readers (the fold included) may rely on the limits.
fn ids_in_range(frame: &StoredEvent<'_>) -> bool {
    let id_ok = |id: &str| (1..=ID_BYTES_MAX).contains(&id.len());
    id_ok(frame.interaction_id)
        && id_ok(frame.mcp_id)
        && frame
            .event_id
            .is_none_or(|e| (1..=EVENT_ID_BYTES_MAX).contains(&e.len()))
}

/// Encodes the footer that seals a segment.
pub fn encode_footer(footer: &Footer) -> [u8; FOOTER_BYTES] {
    let mut out = [0u8; FOOTER_BYTES];
    out[FOOTER_MARK].copy_from_slice(&FOOTER_MARKER.to_le_bytes());
    out[FOOTER_LAST_SEQ].copy_from_slice(&footer.last_seq.to_le_bytes());
    out[FOOTER_DATA_END].copy_from_slice(&footer.data_end.to_le_bytes());
    out[FOOTER_RECV_MIN].copy_from_slice(&footer.received_min_us.to_le_bytes());
    out[FOOTER_RECV_MAX].copy_from_slice(&footer.received_max_us.to_le_bytes());
    out[FOOTER_HASH].copy_from_slice(&footer.segment_hash);
    // The CRC covers everything after it.
    let crc = crc32fast::hash(&out[FOOTER_CRC.end..]);
    out[FOOTER_CRC].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_footer(rest: &[u8]) -> Decoded<'_> {
    let Some(raw) = rest.get(..FOOTER_BYTES) else {
        return Decoded::Incomplete;
    };
    if crc32fast::hash(&raw[FOOTER_CRC.end..]) != read_u32(raw, FOOTER_CRC.start) {
        return Decoded::Corrupt(CorruptKind::CrcMismatch);
    }
    let mut segment_hash = [0u8; 32];
    segment_hash.copy_from_slice(&raw[FOOTER_HASH]);
    Decoded::Footer(Footer {
        last_seq: read_u64(raw, FOOTER_LAST_SEQ.start),
        data_end: read_u64(raw, FOOTER_DATA_END.start),
        received_min_us: read_u64(raw, FOOTER_RECV_MIN.start),
        received_max_us: read_u64(raw, FOOTER_RECV_MAX.start),
        segment_hash,
    })
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;
    use proptest::prelude::*;

    #[test]
    fn ids_outside_the_formats_lengths_do_not_decode() {
        let long = "i".repeat(ID_BYTES_MAX + 1);
        let long_event_id = "e".repeat(EVENT_ID_BYTES_MAX + 1);
        let at_limit = "i".repeat(ID_BYTES_MAX);
        let cases = [
            (frame(1, "{}", &long), false),
            (frame(1, "{}", ""), false),
            (frame(1, "{}", &at_limit), true),
            (
                StoredEvent {
                    mcp_id: "",
                    ..frame(1, "{}", "i")
                },
                false,
            ),
            (
                StoredEvent {
                    event_id: Some(""),
                    ..frame(1, "{}", "i")
                },
                false,
            ),
            (
                StoredEvent {
                    event_id: Some(&long_event_id),
                    ..frame(1, "{}", "i")
                },
                false,
            ),
        ];
        for (event, valid) in cases {
            let mut bytes = Vec::new();
            encode_frame(&event, &mut bytes);
            let decoded = decode_at(&bytes, 0);
            assert_eq!(
                matches!(decoded, Decoded::Frame { .. }),
                valid,
                "{decoded:?}"
            );
            if !valid {
                assert_eq!(decoded, Decoded::Corrupt(CorruptKind::BadPayload));
            }
        }
    }

    fn frame<'a>(seq: u64, body: &'a str, id: &'a str) -> StoredEvent<'a> {
        StoredEvent {
            seq,
            write_index: 0,
            received_at_us: 1_763_900_000_000_000,
            key_id: [1, 2, 3, 4, 5, 6, 7, 8],
            action: Action::Start,
            timestamp: 1_763_900_000.25,
            interaction_id: id,
            mcp_id: "ocr",
            event_id: None,
            body,
        }
    }

    #[test]
    fn header_round_trips_and_rejects_flips() {
        let header = Header {
            first_seq: 42,
            created_at_us: 7,
            prev_hash: [9; 32],
        };
        let bytes = encode_header(&header);
        assert_eq!(decode_header(&bytes), Ok(header));
        for bit in 0..HEADER_BYTES * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_header(&flipped).is_err(),
                "bit {bit} flip went unnoticed"
            );
        }
        assert_eq!(decode_header(&bytes[..HEADER_BYTES - 1]), Err(None));
    }

    #[test]
    fn footer_round_trips() {
        let footer = Footer {
            last_seq: 9,
            data_end: 1000,
            received_min_us: 1,
            received_max_us: 2,
            segment_hash: [7; 32],
        };
        let bytes = encode_footer(&footer);
        assert_eq!(decode_at(&bytes, 0), Decoded::Footer(footer));
        assert_eq!(
            decode_at(&bytes[..FOOTER_BYTES - 1], 0),
            Decoded::Incomplete
        );
    }

    #[test]
    fn truncated_frame_is_incomplete_and_flipped_frame_is_corrupt() {
        let mut bytes = Vec::new();
        encode_frame(&frame(1, "{}", "a"), &mut bytes);
        for cut in 0..bytes.len() {
            assert_eq!(
                decode_at(&bytes[..cut], 0),
                Decoded::Incomplete,
                "cut at {cut}"
            );
        }
        for bit in 32..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(decode_at(&flipped, 0), Decoded::Corrupt(_)),
                "bit {bit}"
            );
        }
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            seq in any::<u64>(),
            write_index in any::<u32>(),
            received_at_us in any::<u64>(),
            key_id in any::<[u8; 8]>(),
            action in 0u8..5,
            timestamp in 0.0f64..1e11,
            interaction_id in "\\PC{1,64}",
            mcp_id in "\\PC{1,64}",
            event_id in proptest::option::of("\\PC{1,32}"),
            body in "\\PC{0,300}",
        ) {
            let original = StoredEvent {
                seq, write_index, received_at_us, key_id,
                action: Action::ALL[action as usize],
                timestamp,
                interaction_id: &interaction_id,
                mcp_id: &mcp_id,
                event_id: event_id.as_deref(),
                body: &body,
            };
            let mut bytes = vec![0xAA; 3];
            encode_frame(&original, &mut bytes);
            match decode_at(&bytes, 3) {
                Decoded::Frame { frame, end } => {
                    prop_assert_eq!(frame, original);
                    prop_assert_eq!(end, bytes.len());
                }
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), at in 0usize..210) {
            let _ = decode_at(&bytes, at);
            let _ = decode_header(&bytes);
        }
    }
}
