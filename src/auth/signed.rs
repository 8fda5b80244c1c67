//! Signed keys and fingerprints: minting, strict parsing, the HMAC tag compared in constant
//! time, and the one normalisation every key's text goes through.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{KeyError, KeyId, Principal, Role, SIGNED_PREFIX, TAG_BYTES};

/// Mints a signed key with a fresh random nonce.
pub fn mint(master: &[u8], role: Role, mcp_id: &str, expires_at: u64) -> Result<String, KeyError> {
    let nonce = random_hex(NONCE_BYTES)?;
    let tag = tag(master, role, expires_at, &nonce, mcp_id);
    Ok(format!(
        "{SIGNED_PREFIX}.{}.{expires_at}.{}.{nonce}.{}",
        role.as_str(),
        hex(mcp_id.as_bytes()),
        hex(&tag)
    ))
}

/// Random bytes in each signed key.
const NONCE_BYTES: usize = 8;

fn tag(master: &[u8], role: Role, expires_at: u64, nonce: &str, mcp_id: &str) -> [u8; TAG_BYTES] {
    let full = mac(master, role, expires_at, nonce, mcp_id)
        .finalize()
        .into_bytes();
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&full[..TAG_BYTES]);
    tag
}

fn mac(master: &[u8], role: Role, expires_at: u64, nonce: &str, mcp_id: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(b"mcplog-key\0v1\0");
    mac.update(role.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(expires_at.to_string().as_bytes());
    mac.update(b"\0");
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(mcp_id.as_bytes());
    mac
}

/// Parses and verifies a signed key strictly: any change to any character fails.
pub(super) fn verify_signed(master: &[u8], key: &str, id: KeyId) -> Option<Principal> {
    let mut parts = key.split('.');
    let (prefix, role, expires) = (parts.next()?, parts.next()?, parts.next()?);
    let (mcp_hex, nonce, tag_hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || prefix != SIGNED_PREFIX {
        return None;
    }
    let role = Role::from_name(role)?;
    // Canonical decimal only, so that no two spellings of one expiry exist.
    if expires.is_empty()
        || (expires.len() > 1 && expires.starts_with('0'))
        || !expires.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let expires_at: u64 = expires.parse().ok()?;
    let mcp_id = String::from_utf8(parse_hex(mcp_hex)?).ok()?;
    let tag = parse_hex(tag_hex)?;
    // A writer is bound to one mcp_id; auditor and admin keys may carry none.
    if tag.len() != TAG_BYTES
        || (mcp_id.is_empty() && role == Role::Writer)
        || parse_hex(nonce)?.len() != NONCE_BYTES
    {
        return None;
    }
    // `verify_truncated_left` compares in constant time.
    mac(master, role, expires_at, nonce, &mcp_id)
        .verify_truncated_left(&tag)
        .ok()?;
    Some(Principal {
        role,
        mcp_id: (!mcp_id.is_empty()).then(|| Arc::from(mcp_id)),
        key_id: id,
        expires_at: Some(expires_at),
    })
}

/// A key as it is compared and fingerprinted: without surrounding white space, so a key copied
/// from a file with its trailing newline is the same key in a header, a revocation and `keygen`.
pub fn normalize_key(key: &str) -> &str {
    key.trim()
}

/// The fingerprint of a key (of its normalized form).
pub fn key_id(key: &str) -> KeyId {
    let key = normalize_key(key);
    let digest = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

use crate::hex::decode as parse_hex;
/// Lower-case hex of bytes (key ids in the API are 16 hex digits).
pub use crate::hex::encode as hex;

/// Parses a 16-hex-digit key id.
pub fn parse_key_id(text: &str) -> Option<KeyId> {
    let bytes = parse_hex(text.trim())?;
    bytes.try_into().ok()
}

pub(super) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn random_hex(bytes: usize) -> Result<String, KeyError> {
    let mut secret = vec![0u8; bytes];
    getrandom::fill(&mut secret)
        .map_err(|e| KeyError::Invalid(format!("no randomness available: {e}")))?;
    Ok(hex(&secret))
}
