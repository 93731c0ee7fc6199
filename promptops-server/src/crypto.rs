//! Encryption at rest: AES-256-GCM with a key ring. Every encrypted row
//! stores the id of the key that sealed it (`key_id`, the first 8 hex digits
//! of SHA-256 of the key) and `nonce (12 bytes) || ciphertext+tag`. The
//! associated data binds a ciphertext to its row, so rows cannot be swapped.
//!
//! Keys come from `PROMPTOPS_MASTER_KEY` (32 bytes, base64 or hex), plus
//! optional older keys in `PROMPTOPS_OLD_KEYS` (comma separated), or from a
//! key file: one key per line, the first is current, the others are older
//! keys still accepted for decryption (rotation: prepend a new key, restart,
//! run `promptops rekey`).

use std::collections::HashMap;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use sha2::{Digest, Sha256};

#[derive(Debug)]
pub enum CryptoError {
    BadKey(String),
    UnknownKey(String),
    Decrypt(String),
    Io(String),
    /// The operating system's random source or the cipher failed.
    Seal(String),
}

impl std::fmt::Display for CryptoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CryptoError::BadKey(m) => write!(f, "invalid encryption key: {m}"),
            CryptoError::UnknownKey(id) => write!(
                f,
                "data is encrypted with key {id}, which is not in the key ring (add it to PROMPTOPS_OLD_KEYS or the key file)"
            ),
            CryptoError::Decrypt(m) => write!(f, "decryption failed: {m}"),
            CryptoError::Io(m) => write!(f, "key file: {m}"),
            CryptoError::Seal(m) => write!(f, "encryption failed: {m}"),
        }
    }
}

impl std::error::Error for CryptoError {}

pub struct Keyring {
    current_id: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current_id", &self.current_id)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Parse a 32-byte key written as base64 (standard or URL-safe) or hex.
pub fn parse_key(text: &str) -> Result<[u8; 32], CryptoError> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| CryptoError::BadKey(e.to_string()))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
            .map_err(|_| {
                CryptoError::BadKey("expected 32 bytes as base64 or 64 hex digits".into())
            })?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| CryptoError::BadKey(format!("expected 32 bytes, got {}", b.len())))
}

pub fn key_id(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(key)[..4])
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| CryptoError::Seal(format!("the operating system's random source: {e}")))?;
    Ok(b)
}

impl Keyring {
    /// A ring from the current key and older ones.
    pub fn new(current: [u8; 32], older: Vec<[u8; 32]>) -> Keyring {
        let current_id = key_id(&current);
        let mut keys = HashMap::new();
        for k in std::iter::once(current).chain(older) {
            keys.entry(key_id(&k))
                .or_insert_with(|| Aes256Gcm::new(&k.into()));
        }
        Keyring { current_id, keys }
    }

    /// Keys from text: one per line (blank lines and `#` comments ignored);
    /// the first is current.
    pub fn from_text(text: &str) -> Result<Keyring, CryptoError> {
        let mut keys = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            keys.push(parse_key(l)?);
        }
        let mut it = keys.into_iter();
        let current = it
            .next()
            .ok_or_else(|| CryptoError::BadKey("the key file holds no key".into()))?;
        Ok(Keyring::new(current, it.collect()))
    }

    /// Read a key file; when it does not exist and `create` is set, write a
    /// new random key to it with mode 0600.
    pub fn from_file(path: &Path, create: bool) -> Result<Keyring, CryptoError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Keyring::from_text(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key: [u8; 32] = random_bytes()?;
                let text = format!(
                    "# promptops encryption key (AES-256-GCM). Keep it secret; without it the registry cannot be read.\n{}\n",
                    base64::engine::general_purpose::STANDARD.encode(key)
                );
                write_private_file(path, text.as_bytes())
                    .map_err(|e| CryptoError::Io(format!("{}: {e}", path.display())))?;
                Ok(Keyring::new(key, Vec::new()))
            }
            Err(e) => Err(CryptoError::Io(format!("{}: {e}", path.display()))),
        }
    }

    pub fn current_id(&self) -> &str {
        &self.current_id
    }

    /// Seal `plain` with the current key; returns (key id, nonce || ciphertext).
    pub fn seal(&self, plain: &[u8], aad: &str) -> Result<(String, Vec<u8>), CryptoError> {
        let cipher = self
            .keys
            .get(&self.current_id)
            .ok_or_else(|| CryptoError::UnknownKey(self.current_id.clone()))?;
        let nonce: [u8; 12] = random_bytes()?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|e| CryptoError::Seal(format!("AES-GCM: {e}")))?;
        let mut out = Vec::with_capacity(12 + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok((self.current_id.clone(), out))
    }

    pub fn open(&self, key_id: &str, sealed: &[u8], aad: &str) -> Result<Vec<u8>, CryptoError> {
        let cipher = self
            .keys
            .get(key_id)
            .ok_or_else(|| CryptoError::UnknownKey(key_id.to_string()))?;
        if sealed.len() < 12 + 16 {
            return Err(CryptoError::Decrypt("ciphertext too short".into()));
        }
        let (nonce, ct) = sealed.split_at(12);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                CryptoError::Decrypt(format!(
                    "authentication failed for {aad} (wrong key or tampered row)"
                ))
            })
    }

    pub fn open_string(
        &self,
        key_id: &str,
        sealed: &[u8],
        aad: &str,
    ) -> Result<String, CryptoError> {
        String::from_utf8(self.open(key_id, sealed, aad)?)
            .map_err(|_| CryptoError::Decrypt(format!("{aad}: not UTF-8")))
    }
}

/// Create (or replace) a file readable only by its owner.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_rotation() {
        let k1: [u8; 32] = random_bytes().unwrap();
        let k2: [u8; 32] = random_bytes().unwrap();
        let old = Keyring::new(k1, vec![]);
        let (id1, sealed) = old.seal(b"hello", "row:1").unwrap();
        assert_eq!(old.open(&id1, &sealed, "row:1").unwrap(), b"hello");
        assert!(
            old.open(&id1, &sealed, "row:2").is_err(),
            "aad binds the row"
        );
        let rotated = Keyring::new(k2, vec![k1]);
        assert_ne!(rotated.current_id(), id1);
        assert_eq!(rotated.open(&id1, &sealed, "row:1").unwrap(), b"hello");
        let fresh = Keyring::new(k2, vec![]);
        assert!(matches!(
            fresh.open(&id1, &sealed, "row:1"),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn key_formats() {
        let k: [u8; 32] = random_bytes().unwrap();
        assert_eq!(parse_key(&hex::encode(k)).unwrap(), k);
        assert_eq!(
            parse_key(&base64::engine::general_purpose::STANDARD.encode(k)).unwrap(),
            k
        );
        assert!(parse_key("short").is_err());
    }

    #[test]
    fn key_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let a = Keyring::from_file(&p, true).unwrap();
        let b = Keyring::from_file(&p, false).unwrap();
        assert_eq!(a.current_id(), b.current_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
