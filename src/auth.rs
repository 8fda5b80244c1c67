//! API keys: who is calling. For now one admin key, generated on first start into
//! `<data>/admin.key` (mode 0600); signed and static keys come with the access-control work.
//!
//! Keys never reach the log, the server's logs or an error message: events carry a
//! [`KeyId`], the first 8 bytes of the key's SHA-256.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A short fingerprint of a key: the first 8 bytes of its SHA-256.
pub type KeyId = [u8; 8];

/// Name of the file that holds the generated admin key.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
}

/// An authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The caller's role.
    pub role: Role,
    /// Fingerprint of the key it used.
    pub key_id: KeyId,
}

/// The keys the server accepts.
#[derive(Debug, Clone)]
pub struct Keys {
    admin_digest: [u8; 32],
}

impl Keys {
    /// Accepts exactly this admin key.
    pub fn with_admin(admin_key: &str) -> Keys {
        Keys {
            admin_digest: Sha256::digest(admin_key.as_bytes()).into(),
        }
    }

    /// Checks a presented key. Digests are compared in constant time, so the time taken says
    /// nothing about how much of a guess was right.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if constant_time_eq(&digest, &self.admin_digest) {
            let mut key_id = [0u8; 8];
            key_id.copy_from_slice(&digest[..8]);
            return Some(Principal {
                role: Role::Admin,
                key_id,
            });
        }
        None
    }
}

/// The fingerprint of a key.
pub fn key_id(key: &str) -> KeyId {
    let digest = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// Lower-case hex of bytes (key ids in the API are 16 hex digits).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads `<data>/admin.key`, or creates it (mode 0600) with a fresh random key. Returns the key
/// and, when it was just created, the file's path so the operator can be told where it is.
pub fn load_or_create_admin_key(data_dir: &Path) -> std::io::Result<(String, Option<PathBuf>)> {
    let path = data_dir.join(ADMIN_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_owned(), None)),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is empty; delete it to have a new key made",
                path.display()
            )))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| std::io::Error::other(format!("no randomness for a key: {e}")))?;
    let key = format!("mcplog_admin_{}", hex(&secret));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    Ok((key, Some(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_key_authenticates() {
        let keys = Keys::with_admin("secret-key");
        let who = keys.authenticate("secret-key").unwrap();
        assert_eq!(who.role, Role::Admin);
        assert_eq!(who.key_id, key_id("secret-key"));
        assert!(keys.authenticate("secret-kez").is_none());
        assert!(keys.authenticate("").is_none());
    }

    #[test]
    fn admin_key_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (key, created) = load_or_create_admin_key(dir.path()).unwrap();
        let path = created.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, created) = load_or_create_admin_key(dir.path()).unwrap();
        assert_eq!(again, key);
        assert!(created.is_none());
    }
}
