//! Lower-case hex, the one spelling of bytes as text in the crate: key ids in the API and in
//! dumps, hashes in `segments/repairs.jsonl`, signed keys, and the format document's byte dump.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`, without a formatting call per byte (dump and replay print millions
/// of key ids).
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The bytes of lower-case hex of even length; `None` for anything else (upper case included:
/// every hex mcplog reads it wrote itself, in lower case).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// [`decode`] of exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode(text)?.try_into().ok()
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// An `xxd`-style dump: offset, 16 bytes in hex, and their printable ASCII (storage-format.md
/// shows the fixture segment so).
#[cfg(test)]
pub(crate) fn dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| encode(&[*b])).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}: {:<47}  {}\n",
            row * 16,
            hex.join(" "),
            ascii
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_byte_in_lower_case_and_decodes_it_back() {
        let all: Vec<u8> = (0..=255).collect();
        let text = encode(&all);
        assert_eq!(&text[..6], "000102");
        assert_eq!(&text[text.len() - 4..], "feff");
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(text, expected);
        assert_eq!(decode(&text), Some(all));
    }

    #[test]
    fn decode_refuses_odd_lengths_upper_case_and_other_characters() {
        for text in ["abc", "AB", "0g", "+1", " 01"] {
            assert_eq!(decode(text), None, "{text:?}");
        }
        assert_eq!(decode(""), Some(Vec::new()));
        assert_eq!(decode_array::<2>("0aff"), Some([0x0a, 0xff]));
        assert_eq!(decode_array::<2>("0aff00"), None);
    }

    #[test]
    fn dump_shows_offset_hex_and_ascii() {
        assert_eq!(
            dump(b"MCPLOG\x00\x01"),
            "00000000: 4d 43 50 4c 4f 47 00 01                          MCPLOG..\n"
        );
    }
}
