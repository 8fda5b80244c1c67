//! A group as a stream message: its frames as the payload; its first seq, the previous group's
//! hash, the rules it was planned under and a MAC over all of them in headers. The MAC's key is
//! derived from the master secret every node shares, so access to NATS alone cannot write a
//! group any node applies.

use async_nats::HeaderMap;
use bytes::Bytes;
use hmac::{Hmac, Mac};

use crate::engine::replica::Group;

/// The header carrying a group's first seq, in decimal.
pub const FIRST_SEQ_HEADER: &str = "Mcplog-First-Seq";
/// The header carrying the previous group's chain hash, in hex.
pub const PREV_HASH_HEADER: &str = "Mcplog-Prev-Hash";
/// The header carrying the fingerprint of the publishing node's rules, in hex.
pub const RULES_HEADER: &str = "Mcplog-Rules";
/// The header carrying the group's MAC, in hex.
pub const MAC_HEADER: &str = "Mcplog-Mac";

/// What the MAC key is derived for from the master secret.
const MAC_PURPOSE: &str = "cluster group mac v1";

/// The keys a group's MAC is made and checked with.
#[derive(Clone)]
pub struct GroupKeys {
    /// Signs, and verifies.
    current: [u8; 32],
    /// Only verify: from previous master secrets, while a rotation reaches every node.
    previous: Vec<[u8; 32]>,
}

impl std::fmt::Debug for GroupKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a key: how many verify.
        write!(f, "GroupKeys({} previous)", self.previous.len())
    }
}

impl GroupKeys {
    /// The keys derived from the current master secret and the previous ones.
    pub fn from_master_secrets(current: &[u8], previous: &[Vec<u8>]) -> GroupKeys {
        let derive = |secret: &[u8]| crate::auth::derive_secret(secret, MAC_PURPOSE);
        GroupKeys {
            current: derive(current),
            previous: previous.iter().map(|secret| derive(secret)).collect(),
        }
    }

    /// The keys from the server's [`crate::auth::Keys`].
    pub fn of(keys: &crate::auth::Keys) -> GroupKeys {
        GroupKeys {
            current: keys.derived_secret(MAC_PURPOSE),
            previous: keys.previous_derived_secrets(MAC_PURPOSE),
        }
    }

    /// The MAC of `group` under `key`, fed with everything that decides what a node applies.
    fn mac(key: &[u8; 32], group: &Group) -> Hmac<sha2::Sha256> {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        // Fixed lengths before the payload: no two groups feed the same bytes.
        mac.update(&group.first_seq.to_le_bytes());
        mac.update(&group.prev_hash);
        mac.update(&group.rules);
        mac.update(&group.frames);
        mac
    }

    /// Whether `tag` is the MAC of `group` under any of the keys (compared in constant time).
    fn verifies(&self, group: &Group, tag: &[u8]) -> bool {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| GroupKeys::mac(key, group).verify_slice(tag).is_ok())
    }
}

/// An authenticated group from a message's headers and payload, or why it is not one.
pub(super) fn group_of(
    headers: &HeaderMap,
    frames: Bytes,
    keys: &GroupKeys,
) -> Result<Group, String> {
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
    let rules = crate::hex::decode_array(&header(RULES_HEADER)?)
        .ok_or(format!("{RULES_HEADER} is not 32 hex digits"))?;
    let tag = crate::hex::decode_array::<32>(&header(MAC_HEADER)?)
        .ok_or(format!("{MAC_HEADER} is not 64 hex digits"))?;
    let group = Group {
        first_seq,
        prev_hash,
        frames,
        rules,
    };
    if !keys.verifies(&group, &tag) {
        return Err(format!(
            "its {MAC_HEADER} does not verify under the key derived from this node's master \
             secret (not written by a node sharing it)"
        ));
    }
    Ok(group)
}

/// The headers of a group's message, its MAC made with the current key.
pub fn group_headers(group: &Group, keys: &GroupKeys) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(FIRST_SEQ_HEADER, group.first_seq.to_string().as_str());
    headers.insert(
        PREV_HASH_HEADER,
        crate::hex::encode(&group.prev_hash).as_str(),
    );
    headers.insert(RULES_HEADER, crate::hex::encode(&group.rules).as_str());
    let tag = GroupKeys::mac(&keys.current, group).finalize().into_bytes();
    headers.insert(MAC_HEADER, crate::hex::encode(&tag).as_str());
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> GroupKeys {
        GroupKeys::from_master_secrets(secret.as_bytes(), &[])
    }

    #[test]
    fn a_group_survives_its_headers_and_only_its_key_authenticates_it() {
        let group = Group {
            first_seq: 42,
            prev_hash: [7; 32],
            frames: Bytes::from_static(b"frames"),
            rules: [3; 16],
        };
        let ours = keys("the shared master secret");
        let back = group_of(&group_headers(&group, &ours), group.frames.clone(), &ours).unwrap();
        assert_eq!(back, group);
        let mut bad = group_headers(&group, &ours);
        bad.insert(PREV_HASH_HEADER, "zz");
        assert!(group_of(&bad, Bytes::new(), &ours)
            .unwrap_err()
            .contains(PREV_HASH_HEADER));
        assert!(group_of(&HeaderMap::new(), Bytes::new(), &ours)
            .unwrap_err()
            .contains(FIRST_SEQ_HEADER));
        // Another master secret, or any covered part changed, and the MAC does not verify.
        let theirs = keys("another master secret");
        let forged = group_headers(&group, &theirs);
        assert!(group_of(&forged, group.frames.clone(), &ours)
            .unwrap_err()
            .contains(MAC_HEADER));
        let signed = group_headers(&group, &ours);
        assert!(group_of(&signed, Bytes::from_static(b"frameZ"), &ours).is_err());
        for (name, value) in [
            (FIRST_SEQ_HEADER, "43".to_owned()),
            (PREV_HASH_HEADER, crate::hex::encode(&[8; 32])),
            (RULES_HEADER, crate::hex::encode(&[4; 16])),
        ] {
            let mut changed = signed.clone();
            changed.insert(name, value.as_str());
            assert!(
                group_of(&changed, group.frames.clone(), &ours)
                    .unwrap_err()
                    .contains(MAC_HEADER),
                "{name}"
            );
        }
        // After a rotation, a group signed with the previous secret still verifies.
        let rotated = GroupKeys::from_master_secrets(
            b"the next master secret",
            &[b"the shared master secret".to_vec()],
        );
        assert!(group_of(&signed, group.frames.clone(), &rotated).is_ok());
    }
}
