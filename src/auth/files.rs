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
    match read_bounded(path) {
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

/// Most bytes a key file may hold: far more than a key or secret, far less than would hurt.
const KEY_FILE_BYTES_MAX: u64 = 4096;

/// `O_NONBLOCK` on Linux: opening a FIFO put in a key file's place must not wait for a writer.
const OPEN_NONBLOCK: i32 = 0o4000;

/// A key file's text: a regular file (not a FIFO, a device or a directory), at most
/// [`KEY_FILE_BYTES_MAX`] bytes of UTF-8.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {KEY_FILE_BYTES_MAX} bytes"),
        ));
    }
    Ok(text)
}

/// Reads `<data>/admin.key`, or creates it (mode 0600) with a fresh random key. A key must be
/// something a client can send: printable ASCII without white space, quotes or backslashes, at
/// most 1024 bytes; anything else is refused (and a running server keeps its current key).
pub fn load_or_create_admin_key(data_dir: &Path) -> Result<(String, Option<PathBuf>), KeyError> {
    let path = data_dir.join(ADMIN_KEY_FILE);
    let (key, created) = load_or_create(&path, || {
        Ok(format!("{ADMIN_KEY_PREFIX}{}", random_hex(32)?))
    })?;
    if key.len() > 1024
        || !key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(KeyError::Invalid(format!(
            "{} does not hold one key (1 to 1024 printable ASCII characters without white space, quotes or backslashes)",
            path.display()
        )));
    }
    Ok((key, created))
}

/// The master secrets: the current one signs keys, and it and every previous one verify them.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterSecrets {
    /// Signs (`keygen`) and verifies.
    pub current: Vec<u8>,
    /// Only verify: `security.previous_master_secrets`, kept while keys signed with them are in
    /// use.
    pub previous: Vec<Vec<u8>>,
}

impl std::fmt::Debug for MasterSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a secret: how many there are.
        write!(
            f,
            "MasterSecrets {{ current, {} previous }}",
            self.previous.len()
        )
    }
}

/// Whether [`master_secrets`] may create `<data>/master.secret`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFile {
    /// The server: a first start makes the secret.
    Create,
    /// `keygen`: a fresh secret would sign keys the server refuses, so it only reads one.
    Read,
}

/// Shortest master secret accepted, in bytes.
pub const SECRET_BYTES_MIN: usize = 16;

/// The master secrets, resolved the one way both `serve` and `keygen` use: the configured
/// `security.master_secret` (file or environment), else `<data>/master.secret` (created on the
/// server's first start), and the configured `security.previous_master_secrets`. A
/// `master.secret` file that configuration shadows is named in a warning: keys signed with it are
/// refused unless it is listed as previous.
pub fn master_secrets(
    configured: Option<&str>,
    previous: &[String],
    data_dir: &Path,
    file: SecretFile,
) -> Result<MasterSecrets, KeyError> {
    let path = data_dir.join(MASTER_SECRET_FILE);
    for secret in previous {
        if secret.len() < SECRET_BYTES_MIN {
            return Err(KeyError::Invalid(format!(
                "every security.previous_master_secrets entry must be at least {SECRET_BYTES_MIN} bytes"
            )));
        }
    }
    let current = match configured {
        Some(secret) => {
            if secret.len() < SECRET_BYTES_MIN {
                return Err(KeyError::Invalid(format!(
                    "security.master_secret must be at least {SECRET_BYTES_MIN} bytes"
                )));
            }
            if let Ok(text) = std::fs::read_to_string(&path) {
                let listed = previous.iter().any(|p| p == text.trim());
                if text.trim() != secret {
                    tracing::warn!(
                        "{MASTER_SECRET_FILE} in the data directory is not used: \
                         security.master_secret (MCPLOG_MASTER_SECRET) is set and takes its place; \
                         keys signed with the file's secret are {}",
                        if listed {
                            "accepted while it is listed in security.previous_master_secrets"
                        } else {
                            "refused (list it in security.previous_master_secrets to accept them, \
                             or delete the file)"
                        }
                    );
                }
            }
            secret.as_bytes().to_vec()
        }
        None => match file {
            SecretFile::Create => load_or_create(&path, || random_hex(32))?.0.into_bytes(),
            SecretFile::Read => read_secret_file(&path, data_dir)?,
        },
    };
    let mut previous_secrets: Vec<Vec<u8>> = Vec::new();
    for secret in previous {
        let secret = secret.as_bytes().to_vec();
        if secret != current && !previous_secrets.contains(&secret) {
            previous_secrets.push(secret);
        }
    }
    Ok(MasterSecrets {
        current,
        previous: previous_secrets,
    })
}

/// `<data>/master.secret`, which must exist.
fn read_secret_file(path: &Path, data_dir: &Path) -> Result<Vec<u8>, KeyError> {
    match std::fs::read_to_string(path) {
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
        Err(source) => Err(KeyError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}
