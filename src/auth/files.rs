//! The key files in the data directory: the admin key and the master secret, read or created
//! once with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::signed::random_hex;
use super::{KeyError, ADMIN_KEY_FILE, ADMIN_KEY_PREFIX, MASTER_SECRET_FILE};

/// Reads a secret file, or creates it (mode 0600) with `make()`. Returns the content and, when it
/// was just created, the path.
fn load_or_create(
    path: &Path,
    make: impl FnOnce() -> Result<String, KeyError>,
) -> Result<(String, Option<PathBuf>), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok((text.trim().to_owned(), None)),
        Ok(_) => {
            return Err(KeyError::Invalid(format!(
                "{} is empty; delete it to have a new one made",
                path.display()
            )))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(io(source)),
    }
    if let Some(dir) = path.parent() {
        crate::storage::create_private_dir(dir).map_err(io)?;
    }
    let value = make()?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(format!("{value}\n").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok((value, Some(path.to_path_buf())))
}

/// Reads `<data>/admin.key`, or creates it (mode 0600) with a fresh random key.
pub fn load_or_create_admin_key(data_dir: &Path) -> Result<(String, Option<PathBuf>), KeyError> {
    load_or_create(&data_dir.join(ADMIN_KEY_FILE), || {
        Ok(format!("{ADMIN_KEY_PREFIX}{}", random_hex(32)?))
    })
}

/// The master secret: the configured one, else `<data>/master.secret`, created (mode 0600) with 32
/// random bytes on first use.
pub fn load_or_create_master_secret(
    configured: Option<&str>,
    data_dir: &Path,
) -> Result<Vec<u8>, KeyError> {
    if let Some(secret) = configured {
        if secret.len() < 16 {
            return Err(KeyError::Invalid(
                "security.master_secret must be at least 16 bytes".into(),
            ));
        }
        return Ok(secret.as_bytes().to_vec());
    }
    let (secret, _) = load_or_create(&data_dir.join(MASTER_SECRET_FILE), || random_hex(32))?;
    Ok(secret.into_bytes())
}

/// The master secret the server uses, for `keygen`: the configured one, else the data
/// directory's file. Never creates one: a fresh secret would sign keys the server refuses.
pub fn find_master_secret(configured: Option<&str>, data_dir: &Path) -> Result<Vec<u8>, KeyError> {
    if configured.is_some() {
        return load_or_create_master_secret(configured, data_dir);
    }
    let path = data_dir.join(MASTER_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => Err(KeyError::Invalid(format!(
            "{MASTER_SECRET_FILE} in the data directory is empty"
        ))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(KeyError::Invalid(format!(
            "no master secret: the server's comes from security.master_secret or \
             MCPLOG_MASTER_SECRET (give keygen the same --config or variable), or from \
             {MASTER_SECRET_FILE} in its data directory once it has started (give keygen the \
             same --data-dir; {} has none)",
            data_dir.display()
        ))),
        Err(source) => Err(KeyError::Io { path, source }),
    }
}
