//! A group as a stream message: its frames as the payload, its first seq and the previous
//! group's hash in headers.

use async_nats::HeaderMap;
use bytes::Bytes;

use crate::engine::replica::Group;

/// The header carrying a group's first seq, in decimal.
pub const FIRST_SEQ_HEADER: &str = "Mcplog-First-Seq";
/// The header carrying the previous group's chain hash, in hex.
pub const PREV_HASH_HEADER: &str = "Mcplog-Prev-Hash";

/// A group from a message's headers and payload, or why it is not one.
pub(super) fn group_of(headers: &HeaderMap, frames: Bytes) -> Result<Group, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.as_str().to_owned())
            .ok_or(format!("no {name} header"))
    };
    let first_seq = header(FIRST_SEQ_HEADER)?
        .parse::<u64>()
        .map_err(|_| format!("{FIRST_SEQ_HEADER} is not a number"))?;
    let prev_hash = crate::hex::decode_array(&header(PREV_HASH_HEADER)?)
        .ok_or(format!("{PREV_HASH_HEADER} is not 64 hex digits"))?;
    Ok(Group {
        first_seq,
        prev_hash,
        frames,
    })
}

/// The headers of a group's message.
pub fn group_headers(group: &Group) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(FIRST_SEQ_HEADER, group.first_seq.to_string().as_str());
    headers.insert(
        PREV_HASH_HEADER,
        crate::auth::hex(&group.prev_hash).as_str(),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_survives_its_headers() {
        let group = Group {
            first_seq: 42,
            prev_hash: [7; 32],
            frames: Bytes::from_static(b"frames"),
        };
        let back = group_of(&group_headers(&group), group.frames.clone()).unwrap();
        assert_eq!(back, group);
        let mut bad = group_headers(&group);
        bad.insert(PREV_HASH_HEADER, "zz");
        assert!(group_of(&bad, Bytes::new())
            .unwrap_err()
            .contains(PREV_HASH_HEADER));
        assert!(group_of(&HeaderMap::new(), Bytes::new())
            .unwrap_err()
            .contains(FIRST_SEQ_HEADER));
    }
}
