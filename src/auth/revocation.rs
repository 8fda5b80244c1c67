//! Revocations: kept in `<data>/revoked.keys` (one key id a line, appended and fsynced), checked
//! on every request, and refused when they would leave no working admin key.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{hex, parse_key_id, KeyError, KeyId, Keys, Principal, Revocation, Role};

/// An admin key that expires sooner than this does not count as one that remains when the
/// last-admin check weighs a revocation. (A lock-out is still undone by deleting `admin.key`,
/// which makes a new one.)
const LOCK_OUT_MARGIN_SECONDS: f64 = 3600.0;

/// The key ids revoked in the list at `path` (none if there is no list yet).
pub(super) fn read_revocations(path: &Path) -> Result<HashSet<KeyId>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(source) => {
            return Err(KeyError::Io {
                path: PathBuf::from(path),
                source,
            })
        }
    };
    let mut revoked = HashSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match parse_key_id(line) {
            Some(id) => {
                revoked.insert(id);
            }
            // Only a write that failed (and was answered with an error) leaves one.
            None => {
                tracing::warn!(path = %path.display(), "skipping an unreadable line of the revocation list")
            }
        }
    }
    Ok(revoked)
}

impl Keys {
    /// Whether the key is revoked already.
    pub fn is_revoked(&self, id: &KeyId) -> bool {
        self.revoked.read().expect("revocation lock").contains(id)
    }

    /// Whether revoking `id` would leave no working admin key, with `revoked` the keys revoked
    /// now: none of the admin key file, the enabled static admin keys, and the calling admin key
    /// itself (which has just proved that it works) would remain unrevoked and unexpired for
    /// [`LOCK_OUT_MARGIN_SECONDS`].
    fn would_lock_out(
        &self,
        revoked: &HashSet<KeyId>,
        id: &KeyId,
        caller: &Principal,
        now_s: f64,
    ) -> bool {
        // A key counts only while it stays usable: not revoked (a request may have waited for
        // its body while another admin revoked its key), and not expiring within the hour.
        let lasts = |expires_at: Option<f64>| {
            expires_at.is_none_or(|e| e > now_s + LOCK_OUT_MARGIN_SECONDS)
        };
        let file_admin = (self.admin.read().expect("admin key lock").id, None);
        let caller_remains = caller.role == Role::Admin
            && caller.key_id != *id
            && !revoked.contains(&caller.key_id)
            && lasts(caller.expires_at.map(|e| e as f64));
        let issued_remains = std::iter::once(&file_admin)
            .chain(&self.static_admin_ids)
            .any(|(other, expires_at)| {
                other != id && !revoked.contains(other) && lasts(*expires_at)
            });
        !caller_remains && !issued_remains
    }

    /// This node's turn to revoke: held from [`Keys::check_revocation`] until the revocation's
    /// record is applied, so two admins revoking each other at once cannot both pass the check.
    pub async fn revocation_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.revoking.lock().await
    }

    /// Whether `caller` may revoke `id`: not if it is revoked already, nor if that would leave
    /// no working admin key as this node knows them. Call it holding
    /// [`Keys::revocation_turn`]; the revocation itself is the record's folding ([`Keys::revoke`]).
    pub fn check_revocation(&self, id: &KeyId, caller: &Principal, now_s: f64) -> Revocation {
        let revoked = self.revoked.read().expect("revocation lock");
        if revoked.contains(id) {
            Revocation::AlreadyRevoked
        } else if self.would_lock_out(&revoked, id, caller, now_s) {
            Revocation::WouldLockOut
        } else {
            Revocation::Allowed
        }
    }

    /// Writes (and fsyncs) a revocation to `<data>/revoked.keys`.
    fn append_revocation(&self, id: &KeyId) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: self.revoked_path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.revoked_path)
            .map_err(io)?;
        file.write_all(format!("{}\n", hex(id)).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Revokes a key id: effective at once (streams open with it end), then written (and
    /// fsync'd) to `<data>/revoked.keys` so it outlives the segments retention deletes. Called for
    /// every revocation record folded; one already revoked changes nothing. When the file cannot
    /// be written the key stays revoked in memory, and the next start, which applies every record
    /// in the log, writes it.
    pub fn revoke(&self, id: KeyId) -> Result<(), KeyError> {
        let mut revoked = self.revoked.write().expect("revocation lock");
        if !revoked.insert(id) {
            return Ok(());
        }
        drop(revoked);
        self.changed();
        self.append_revocation(&id)
    }
}
