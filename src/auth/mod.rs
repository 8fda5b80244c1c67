//! API keys: who is calling, and what they may do (README.md, "Keys and roles").
//!
//! Three kinds of key are accepted:
//! - the **admin key** generated on first start into `<data>/admin.key` (mode 0600);
//! - **static keys** from the config file's `[static_api_keys]`;
//! - **signed keys** minted by `mcplog keygen`, verified statelessly with HMAC-SHA256 under the
//!   master secret. Format: `mcplog1.<role>.<expires_at>.<mcp_id as hex>.<nonce>.<tag>`, where
//!   `expires_at` is Unix seconds, `nonce` is 8 random bytes in hex (so every minted key differs
//!   and can be revoked alone), and `tag` is the first 16 bytes (128 bits) of HMAC-SHA256(master
//!   secret, `"mcplog-key\0v1\0" role "\0" expires_at "\0" nonce "\0" mcp_id`) in lower-case hex.
//!
//! Keys never reach the log, the server's logs or an error message: events and revocations carry a
//! [`KeyId`], the first 8 bytes of the key's SHA-256. Revocations are kept in `<data>/revoked.keys`
//! and checked on every request, before the validation cache, so they take effect at once.
//!
//! What is accepted can change while the server runs: a revocation, or a new `admin.key`
//! ([`Keys::reload_admin_key`]). Each change bumps a generation ([`Keys::subscribe`]) so that
//! long-lived answers (replay streams) re-check their caller at once with
//! [`Keys::still_accepts`]; they also re-check on a short timer, for expiry.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::scope::Scope;

mod files;
mod revocation;
mod signed;

pub use files::{
    load_or_create_admin_key, master_secrets, MasterSecrets, SecretFile, SECRET_BYTES_MIN,
};
pub use signed::{hex, key_id, mint, normalize_key, parse_key_id};

use revocation::read_revocations;
use signed::{constant_time_eq, verify_signed};

/// A short fingerprint of a key: the first 8 bytes of its SHA-256.
pub type KeyId = [u8; 8];

/// Name of the file that holds the generated admin key.
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// Name of the file that holds the generated master secret.
pub const MASTER_SECRET_FILE: &str = "master.secret";
/// Name of the file of revoked key ids, one per line.
pub const REVOKED_FILE: &str = "revoked.keys";
/// Prefix of signed keys, naming their format version.
pub const SIGNED_PREFIX: &str = "mcplog1";
/// How the generated admin key begins.
pub const ADMIN_KEY_PREFIX: &str = "mcplog_admin_";
/// Bytes of the HMAC tag kept in a signed key.
pub const TAG_BYTES: usize = 16;
const _: () = assert!(TAG_BYTES * 8 >= 128);
/// Most entries the validation cache holds before it is cleared.
const CACHE_ENTRIES_MAX: usize = 100_000;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Posts events for one mcp_id and reads its records, metrics and replay.
    Writer,
    /// Reads and replays everything, writes nothing.
    Auditor,
    /// Everything, including revocation.
    Admin,
}

impl Role {
    /// The name used in config files, keys and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// The role with this name.
    pub fn from_name(name: &str) -> Option<Role> {
        [Role::Writer, Role::Auditor, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// What this node's check of a revocation request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The key may be revoked: the caller writes the revocation record, whose folding revokes it.
    Allowed,
    /// It was already.
    AlreadyRevoked,
    /// Refused: no working admin key would remain.
    WouldLockOut,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller's role.
    pub role: Role,
    /// The mcp_id a writer is bound to (signed keys bind one for every role).
    pub mcp_id: Option<Arc<str>>,
    /// Fingerprint of the key it used.
    pub key_id: KeyId,
    /// Unix seconds after which the key is refused, if it expires.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// Whether this caller may post events for `mcp_id`.
    pub fn may_write(&self, mcp_id: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Auditor => false,
            Role::Writer => self.mcp_id.as_deref() == Some(mcp_id),
        }
    }

    /// The mcp_ids this caller may read: all, or a writer's own.
    pub fn scope(&self) -> Scope<'_> {
        match (self.role, self.mcp_id.as_deref()) {
            (Role::Admin | Role::Auditor, _) => Scope::All,
            (Role::Writer, Some(own)) => Scope::Only(own),
            // Keys are checked to carry one; a writer without one would read nothing.
            (Role::Writer, None) => Scope::Nothing,
        }
    }
}

/// A key from the config file's `[static_api_keys]`.
#[derive(Clone, PartialEq)]
pub struct StaticKey {
    /// The key itself.
    pub key: String,
    /// The mcp_id a writer is bound to.
    pub mcp_id: Option<String>,
    /// Its role.
    pub role: Role,
    /// Unix seconds after which it is refused; none means no expiry.
    pub expires_at: Option<f64>,
    /// A disabled key is refused.
    pub disabled: bool,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key: only its fingerprint.
        f.debug_struct("StaticKey")
            .field("key_id", &hex(&key_id(&self.key)))
            .field("mcp_id", &self.mcp_id)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Why a key was refused. The messages never contain the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No key, or one that is not known or does not verify.
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unknown,
    /// The key has expired.
    #[error("the API key has expired")]
    Expired,
    /// The key is disabled in the configuration.
    #[error("the API key is disabled")]
    Disabled,
    /// The key was revoked.
    #[error("the API key has been revoked")]
    Revoked,
    /// The key was the admin key file's, and the file has since been replaced or deleted.
    #[error("the API key is no longer the admin key: admin.key was replaced")]
    Replaced,
}

/// Errors of key management on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A request that cannot be satisfied, with the reason.
    #[error("{0}")]
    Invalid(String),
}

struct StaticEntry {
    principal: Principal,
    expires_at: Option<f64>,
    disabled: bool,
}

/// The admin key file's key, as compared.
struct AdminKey {
    digest: [u8; 32],
    id: KeyId,
}

impl AdminKey {
    fn of(key: &str) -> AdminKey {
        AdminKey {
            digest: Sha256::digest(normalize_key(key).as_bytes()).into(),
            id: key_id(key),
        }
    }
}

/// A verified signed key, remembered for `cache_ttl`.
struct Cached {
    principal: Principal,
    at: Instant,
    /// Verified with a previous master secret, not the current one.
    previous: bool,
}

/// What [`Keys::reload_admin_key`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminReload {
    /// The file holds the key in use.
    Unchanged,
    /// The file holds another key, now the admin key; the old one is refused.
    Replaced,
    /// The file was gone: a new key was written to it, and the old one is refused.
    Recreated(PathBuf),
}

/// The keys the server accepts.
pub struct Keys {
    admin: RwLock<AdminKey>,
    /// `<data>/admin.key`, read again by [`Keys::reload_admin_key`].
    data_dir: PathBuf,
    /// Ids of admin keys the file held before: refused as replaced (unless revoked first).
    replaced_admin: RwLock<HashSet<KeyId>>,
    statics: HashMap<[u8; 32], StaticEntry>,
    masters: MasterSecrets,
    /// Requests accepted with a key signed by a previous master secret.
    previous_secret_uses: AtomicU64,
    revoked: RwLock<HashSet<KeyId>>,
    revoked_path: PathBuf,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    cache_ttl: Duration,
    /// Every enabled static admin key's id: with the admin key file's, the admins revocation may
    /// not leave without one.
    static_admin_ids: Vec<(KeyId, Option<f64>)>,
    /// Bumped whenever a key that was accepted may no longer be: a revocation, a new admin key.
    generation: tokio::sync::watch::Sender<u64>,
    /// Held from a revocation's last-admin check until its record is applied, so that two admins
    /// revoking each other at once through this node cannot both pass the check.
    revoking: tokio::sync::Mutex<()>,
    /// Ids of keys this server issued (admin, static) or has accepted since start, so that a
    /// revocation of an id it never met can say so. At most `SEEN_KEYS_MAX`.
    seen: Mutex<HashSet<KeyId>>,
}

/// Most key ids remembered as seen; past it, revoking an unseen id needs `force`.
const SEEN_KEYS_MAX: usize = 100_000;

/// A 32-byte secret for `purpose` derived from `master` (HMAC-SHA256 keyed by it): the same on
/// every node that shares the master secret, and unrelated to it and to any other purpose's.
pub fn derive_secret(master: &[u8], purpose: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(b"mcplog derived secret: ");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Keys {
    /// A 32-byte secret for `purpose`, derived from the master secret (HMAC-SHA256 keyed by it):
    /// the same for the same secret, so what it seals outlives a restart, and unrelated to the
    /// master secret and to any other purpose's.
    pub fn derived_secret(&self, purpose: &str) -> [u8; 32] {
        derive_secret(&self.masters.current, purpose)
    }

    /// [`Keys::derived_secret`] under each previous master secret: what the current secret's
    /// was before a rotation.
    pub fn previous_derived_secrets(&self, purpose: &str) -> Vec<[u8; 32]> {
        self.masters
            .previous
            .iter()
            .map(|secret| derive_secret(secret, purpose))
            .collect()
    }

    /// Keys from the admin key, the static keys, the master secret, and the revocations found in
    /// `data_dir`.
    pub fn new(
        admin_key: &str,
        statics: &[StaticKey],
        masters: MasterSecrets,
        data_dir: &Path,
        cache_ttl: Duration,
    ) -> Result<Keys, KeyError> {
        let statics = static_entries(statics);
        let revoked_path = data_dir.join(REVOKED_FILE);
        let revoked = read_revocations(&revoked_path)?;
        let static_admin_ids: Vec<(KeyId, Option<f64>)> = statics
            .values()
            .filter(|e: &&StaticEntry| e.principal.role == Role::Admin && !e.disabled)
            .map(|e| (e.principal.key_id, e.expires_at))
            .collect();
        let seen = std::iter::once(key_id(admin_key))
            .chain(statics.values().map(|e| e.principal.key_id))
            .collect();
        Ok(Keys {
            static_admin_ids,
            seen: Mutex::new(seen),
            admin: RwLock::new(AdminKey::of(admin_key)),
            data_dir: data_dir.to_path_buf(),
            replaced_admin: RwLock::new(HashSet::new()),
            statics,
            masters,
            previous_secret_uses: AtomicU64::new(0),
            revoked: RwLock::new(revoked),
            revoked_path,
            cache: Mutex::new(HashMap::new()),
            cache_ttl,
            generation: tokio::sync::watch::channel(0).0,
            revoking: tokio::sync::Mutex::new(()),
        })
    }

    /// A receiver told of every change that may end a key's acceptance (a revocation, a new
    /// admin key). Expiry is not announced: holders re-check on a timer too.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Requests accepted so far with a key signed by a previous master secret.
    pub fn previous_secret_uses(&self) -> u64 {
        self.previous_secret_uses.load(Ordering::Relaxed)
    }

    /// Whether a caller accepted earlier is still accepted at `now_s`: not revoked, not expired,
    /// and not the key of an admin key file since replaced. Long-lived answers (replay streams)
    /// ask this on every chunk and on a timer.
    pub fn still_accepts(&self, caller: &Principal, now_s: f64) -> Result<(), AuthError> {
        if self.is_revoked(&caller.key_id) {
            return Err(AuthError::Revoked);
        }
        if self.is_replaced_admin(&caller.key_id) {
            return Err(AuthError::Replaced);
        }
        if caller.expires_at.is_some_and(|e| (e as f64) <= now_s) {
            return Err(AuthError::Expired);
        }
        Ok(())
    }

    fn is_replaced_admin(&self, id: &KeyId) -> bool {
        self.replaced_admin
            .read()
            .expect("replaced admin lock")
            .contains(id)
    }

    /// Reads `<data>/admin.key` again; a changed key replaces the admin key at once (the old one
    /// is refused from then on, and streams opened with it end), and a deleted file is made
    /// again with a fresh key, as a first start would. An empty or unreadable file is an error
    /// and changes nothing.
    pub fn reload_admin_key(&self) -> Result<AdminReload, KeyError> {
        let (key, created) = load_or_create_admin_key(&self.data_dir)?;
        let new = AdminKey::of(&key);
        let old_id = {
            let mut admin = self.admin.write().expect("admin key lock");
            if constant_time_eq(&admin.digest, &new.digest) {
                return Ok(AdminReload::Unchanged);
            }
            std::mem::replace(&mut *admin, new).id
        };
        {
            let mut replaced = self.replaced_admin.write().expect("replaced admin lock");
            replaced.insert(old_id);
            // A key put back in the file works again.
            replaced.remove(&key_id(&key));
        }
        self.seen.lock().expect("seen lock").insert(key_id(&key));
        self.changed();
        Ok(match created {
            Some(path) => AdminReload::Recreated(path),
            None => AdminReload::Replaced,
        })
    }

    /// Checks a presented key at `now_s` (Unix seconds).
    pub fn authenticate(&self, presented: &str, now_s: f64) -> Result<Principal, AuthError> {
        let presented = normalize_key(presented);
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        if self.is_revoked(&id) {
            return Err(AuthError::Revoked);
        }
        let is_admin =
            constant_time_eq(&digest, &self.admin.read().expect("admin key lock").digest);
        if is_admin {
            return Ok(Principal {
                role: Role::Admin,
                mcp_id: None,
                key_id: id,
                expires_at: None,
            });
        }
        if let Some(entry) = self.statics.get(&digest) {
            if entry.disabled {
                return Err(AuthError::Disabled);
            }
            if entry.expires_at.is_some_and(|e| e <= now_s) {
                return Err(AuthError::Expired);
            }
            return Ok(entry.principal.clone());
        }
        if self.is_replaced_admin(&id) {
            return Err(AuthError::Replaced);
        }
        let (principal, previous) = self.verify_cached(presented, digest, id)?;
        if principal.expires_at.is_some_and(|e| (e as f64) <= now_s) {
            return Err(AuthError::Expired);
        }
        if previous {
            self.previous_secret_uses.fetch_add(1, Ordering::Relaxed);
        }
        let mut seen = self.seen.lock().expect("seen lock");
        if seen.len() < SEEN_KEYS_MAX {
            seen.insert(id);
        }
        Ok(principal)
    }

    /// A signed key as [`Keys::verify`] finds it, from the validation cache while its entry is
    /// younger than `cache_ttl`.
    fn verify_cached(
        &self,
        presented: &str,
        digest: [u8; 32],
        id: KeyId,
    ) -> Result<(Principal, bool), AuthError> {
        let cached = {
            let cache = self.cache.lock().expect("cache lock");
            cache
                .get(&digest)
                .filter(|c| c.at.elapsed() < self.cache_ttl)
                .map(|c| (c.principal.clone(), c.previous))
        };
        if let Some(found) = cached {
            return Ok(found);
        }
        let (principal, previous) = self.verify(presented, id)?;
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(
            digest,
            Cached {
                principal: principal.clone(),
                at: Instant::now(),
                previous,
            },
        );
        Ok((principal, previous))
    }

    /// A signed key verified under the current master secret, else under a previous one (then
    /// `true`).
    fn verify(&self, presented: &str, id: KeyId) -> Result<(Principal, bool), AuthError> {
        if let Some(principal) = verify_signed(&self.masters.current, presented, id) {
            return Ok((principal, false));
        }
        self.masters
            .previous
            .iter()
            .find_map(|secret| verify_signed(secret, presented, id))
            .map(|principal| (principal, true))
            .ok_or(AuthError::Unknown)
    }

    /// `text` with every raw key in it replaced by `<a key>`: the admin key and static keys
    /// (recognised by their digests) and anything shaped like a signed or admin key, valid or
    /// not. Text is split at white space, quotes, backslashes and JSON and URL punctuation, which
    /// keys do not contain.
    pub fn redact(&self, text: &str) -> Option<String> {
        let is_key = |token: &str| {
            if token.starts_with(SIGNED_PREFIX) && token.len() > SIGNED_PREFIX.len() + 8 {
                return true;
            }
            if token.starts_with(ADMIN_KEY_PREFIX) {
                return true;
            }
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            constant_time_eq(&digest, &self.admin.read().expect("admin key lock").digest)
                || self.statics.contains_key(&digest)
        };
        let separators = |c: char| c.is_whitespace() || "\"'\\,{}[]<>()=&?/;|`".contains(c);
        let mut found = false;
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while !rest.is_empty() {
            let start = rest.find(|c: char| !separators(c)).unwrap_or(rest.len());
            out.push_str(&rest[..start]);
            rest = &rest[start..];
            let end = rest.find(separators).unwrap_or(rest.len());
            let token = &rest[..end];
            if !token.is_empty() && is_key(token) {
                out.push_str("<a key>");
                found = true;
            } else {
                out.push_str(token);
            }
            rest = &rest[end..];
        }
        found.then_some(out)
    }

    /// Whether this server issued the key with this id (admin or static) or has accepted it.
    pub fn knows(&self, id: &KeyId) -> bool {
        self.seen.lock().expect("seen lock").contains(id)
    }
}

/// The static keys by the digest of their normalized text.
fn static_entries(statics: &[StaticKey]) -> HashMap<[u8; 32], StaticEntry> {
    statics
        .iter()
        .map(|s| {
            let digest: [u8; 32] = Sha256::digest(normalize_key(&s.key).as_bytes()).into();
            let principal = Principal {
                role: s.role,
                mcp_id: s.mcp_id.as_deref().map(Arc::from),
                key_id: key_id(&s.key),
                // Rounded up: a stream's re-check must not end it before the key expires.
                expires_at: s.expires_at.map(|e| e.max(0.0).ceil() as u64),
            };
            (
                digest,
                StaticEntry {
                    principal,
                    expires_at: s.expires_at,
                    disabled: s.disabled,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(current: &[u8]) -> MasterSecrets {
        MasterSecrets {
            current: current.to_vec(),
            previous: Vec::new(),
        }
    }

    fn keys(statics: &[StaticKey]) -> (tempfile::TempDir, Keys) {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new(
            "admin-key",
            statics,
            secrets(b"0123456789abcdef-secret"),
            dir.path(),
            Duration::from_secs(300),
        )
        .unwrap();
        (dir, keys)
    }

    #[test]
    fn admin_static_and_signed_keys_authenticate() {
        let statics = [
            StaticKey {
                key: "static-w".into(),
                mcp_id: Some("m1".into()),
                role: Role::Writer,
                expires_at: None,
                disabled: false,
            },
            StaticKey {
                key: "static-off".into(),
                mcp_id: None,
                role: Role::Auditor,
                expires_at: None,
                disabled: true,
            },
            StaticKey {
                key: "static-old".into(),
                mcp_id: None,
                role: Role::Auditor,
                expires_at: Some(100.0),
                disabled: false,
            },
        ];
        let (_dir, keys) = keys(&statics);
        assert_eq!(
            keys.authenticate("admin-key", 1.0).unwrap().role,
            Role::Admin
        );
        let w = keys.authenticate("static-w", 1.0).unwrap();
        assert_eq!((w.role, w.mcp_id.as_deref()), (Role::Writer, Some("m1")));
        assert_eq!(
            keys.authenticate("static-off", 1.0),
            Err(AuthError::Disabled)
        );
        assert_eq!(
            keys.authenticate("static-old", 1.0).unwrap().role,
            Role::Auditor
        );
        assert_eq!(
            keys.authenticate("static-old", 100.0),
            Err(AuthError::Expired)
        );
        let signed = mint(b"0123456789abcdef-secret", Role::Writer, "ocr.v2", 5000).unwrap();
        let p = keys.authenticate(&signed, 10.0).unwrap();
        assert_eq!(
            (p.role, p.mcp_id.as_deref(), p.key_id),
            (Role::Writer, Some("ocr.v2"), key_id(&signed))
        );
        assert_eq!(
            keys.authenticate(&signed, 5000.0),
            Err(AuthError::Expired),
            "expiry holds even when cached"
        );
        let other = mint(b"another-master-secret", Role::Writer, "ocr.v2", 5000).unwrap();
        assert_eq!(keys.authenticate(&other, 10.0), Err(AuthError::Unknown));
        let twin = mint(b"0123456789abcdef-secret", Role::Writer, "ocr.v2", 5000).unwrap();
        assert_ne!(twin, signed, "every minted key is distinct");
    }

    #[test]
    fn every_tampered_character_of_a_signed_key_is_refused() {
        let (_dir, keys) = keys(&[]);
        let signed = mint(
            b"0123456789abcdef-secret",
            Role::Auditor,
            "m",
            9_999_999_999,
        )
        .unwrap();
        assert!(keys.authenticate(&signed, 1.0).is_ok());
        let bytes = signed.as_bytes();
        for at in 0..bytes.len() {
            for replacement in [b'0', b'1', b'a', b'f', b'.', b'W', b'z'] {
                if bytes[at] == replacement {
                    continue;
                }
                let mut tampered = bytes.to_vec();
                tampered[at] = replacement;
                let tampered = String::from_utf8(tampered).unwrap();
                assert!(
                    keys.authenticate(&tampered, 1.0).is_err(),
                    "accepted with byte {at} changed: {tampered}"
                );
            }
        }
        assert!(keys.authenticate(&signed[..signed.len() - 1], 1.0).is_err());
        assert!(keys.authenticate(&format!("{signed}0"), 1.0).is_err());
    }

    #[test]
    fn revocation_is_immediate_and_persists() {
        let (dir, keys) = keys(&[]);
        let signed = mint(b"0123456789abcdef-secret", Role::Writer, "m", 9_999_999_999).unwrap();
        assert!(keys.authenticate(&signed, 1.0).is_ok(), "now cached");
        keys.revoke(key_id(&signed)).unwrap();
        assert_eq!(keys.authenticate(&signed, 1.0), Err(AuthError::Revoked));
        let again = Keys::new(
            "admin-key",
            &[],
            secrets(b"0123456789abcdef-secret"),
            dir.path(),
            Duration::from_secs(300),
        )
        .unwrap();
        assert_eq!(again.authenticate(&signed, 1.0), Err(AuthError::Revoked));
        let written = std::fs::read_to_string(dir.path().join(REVOKED_FILE)).unwrap();
        assert!(
            !written.contains(&signed),
            "the revocation file holds fingerprints, not keys"
        );
    }

    #[test]
    fn secrets_are_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (key, created) = load_or_create_admin_key(dir.path()).unwrap();
        let path = created.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_admin_key(dir.path()).unwrap(), (key, None));
        let resolve = |configured, previous: &[String], file| {
            master_secrets(configured, previous, dir.path(), file)
        };
        assert!(
            resolve(None, &[], SecretFile::Read).is_err(),
            "keygen never makes a secret"
        );
        let master = resolve(None, &[], SecretFile::Create).unwrap();
        assert_eq!(master.current.len(), 64);
        assert_eq!(resolve(None, &[], SecretFile::Create).unwrap(), master);
        assert_eq!(resolve(None, &[], SecretFile::Read).unwrap(), master);
        let mode = std::fs::metadata(dir.path().join(MASTER_SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(resolve(Some("short"), &[], SecretFile::Read).is_err());
        assert!(resolve(None, &["short".into()], SecretFile::Read).is_err());
        let rotated = resolve(
            Some("a-new-secret-of-some-length"),
            &[String::from_utf8(master.current.clone()).unwrap()],
            SecretFile::Read,
        )
        .unwrap();
        assert_eq!(rotated.current, b"a-new-secret-of-some-length");
        assert_eq!(rotated.previous, [master.current]);
    }

    #[test]
    fn debug_output_never_shows_a_static_key() {
        let key = StaticKey {
            key: "super-secret-value".into(),
            mcp_id: None,
            role: Role::Admin,
            expires_at: None,
            disabled: false,
        };
        assert!(!format!("{key:?}").contains("super-secret-value"));
    }
}
