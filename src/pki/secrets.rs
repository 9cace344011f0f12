//! Secrets at rest: device tokens (UnlockToken, BootstrapToken) are sealed
//! with AES-256-GCM before they reach the store, under a key kept 0600 beside
//! the CA key (`secrets.keys`). The keyring is rotatable: a new key is
//! appended and becomes current; older keys stay to open what they sealed
//! until everything has been resealed.
//!
//! Sealed form: `sealed:v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`, with
//! the record it belongs to (enrollment and field) as associated data, so a
//! sealed value copied to another record does not open. Values without the
//! prefix are legacy plain base64 from before sealing and are resealed at
//! start.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine as _;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use rand::RngCore as _;

use super::PkiError;

const PREFIX: &str = "sealed:v1:";

struct Key {
    id: String,
    bytes: [u8; 32],
}

pub struct SecretBox {
    path: PathBuf,
    /// Oldest first; the last is current.
    keys: RwLock<Vec<Key>>,
}

fn parse_keyring(text: &str) -> Result<Vec<Key>, PkiError> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || PkiError::Io(format!("secrets keyring line {}: expected `<id> <64 hex digits>`", n + 1));
        let (id, hexkey) = line.split_once(' ').ok_or_else(bad)?;
        let raw = hex::decode(hexkey.trim()).map_err(|_| bad())?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| bad())?;
        keys.push(Key { id: id.to_owned(), bytes });
    }
    if keys.is_empty() {
        return Err(PkiError::Io("secrets keyring has no key".into()));
    }
    Ok(keys)
}

fn new_key() -> Key {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut id = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut id);
    Key {
        id: hex::encode(id),
        bytes,
    }
}

fn write_keyring(path: &Path, keys: &[Key]) -> Result<(), PkiError> {
    let mut text = String::from("# mdmd secrets keyring: <id> <AES-256 key>; the last line is current. Keep 0600.\n");
    for k in keys {
        text.push_str(&format!("{} {}\n", k.id, hex::encode(k.bytes)));
    }
    let tmp = path.with_extension("keys.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl SecretBox {
    /// Load the keyring at `path`, or create it with one fresh key.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, PkiError> {
        let keys = match std::fs::read_to_string(path) {
            Ok(t) => {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                }
                parse_keyring(&t)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = vec![new_key()];
                write_keyring(path, &keys)?;
                keys
            }
            Err(e) => return Err(e.into()),
        };
        Ok(SecretBox {
            path: path.to_owned(),
            keys: RwLock::new(keys),
        })
    }

    /// A keyring that lives only in memory (benches, unit tests).
    pub fn ephemeral() -> SecretBox {
        SecretBox {
            path: PathBuf::new(),
            keys: RwLock::new(vec![new_key()]),
        }
    }

    pub fn current_id(&self) -> String {
        self.keys
            .read()
            .map(|k| k.last().map(|k| k.id.clone()).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Result<String, PkiError> {
        let keys = self.keys.read().map_err(|_| PkiError::Crypto("keyring lock poisoned".into()))?;
        let k = keys.last().ok_or_else(|| PkiError::Crypto("no key".into()))?;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut tag = [0u8; 16];
        let ct = encrypt_aead(Cipher::aes_256_gcm(), &k.bytes, Some(&nonce), aad.as_bytes(), plaintext, &mut tag)?;
        let mut blob = Vec::with_capacity(12 + ct.len() + 16);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        blob.extend_from_slice(&tag);
        Ok(format!(
            "{PREFIX}{}:{}",
            k.id,
            base64::engine::general_purpose::STANDARD.encode(blob)
        ))
    }

    /// `open` for values that come from outside (a browser's cookie): only a
    /// value this keyring sealed, never the legacy plain form.
    pub fn open_sealed(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, PkiError> {
        if !sealed.starts_with(PREFIX) {
            return Err(PkiError::BadMessage("not a sealed value".into()));
        }
        self.open(sealed, aad)
    }

    pub fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, PkiError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let Some(rest) = sealed.strip_prefix(PREFIX) else {
            // Legacy: stored before sealing, plain base64.
            return b64.decode(sealed).map_err(|e| PkiError::BadMessage(format!("stored token: {e}")));
        };
        let (id, data) = rest
            .split_once(':')
            .ok_or_else(|| PkiError::BadMessage("sealed value without key id".into()))?;
        let blob = b64.decode(data).map_err(|e| PkiError::BadMessage(format!("sealed value: {e}")))?;
        if blob.len() < 28 {
            return Err(PkiError::BadMessage("sealed value too short".into()));
        }
        let keys = self.keys.read().map_err(|_| PkiError::Crypto("keyring lock poisoned".into()))?;
        let k = keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| PkiError::BadMessage(format!("sealed with key {id}, which is not in the keyring")))?;
        let (nonce, rest) = blob.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        decrypt_aead(Cipher::aes_256_gcm(), &k.bytes, Some(nonce), aad.as_bytes(), ct, tag)
            .map_err(|_| PkiError::BadMessage("sealed value does not open (wrong record or key)".into()))
    }

    /// Sealed under an older key, or not sealed at all.
    pub fn needs_reseal(&self, stored: &str) -> bool {
        match stored.strip_prefix(PREFIX).and_then(|r| r.split_once(':')) {
            Some((id, _)) => id != self.current_id(),
            None => true,
        }
    }

    /// Add a new current key (written 0600 and fsynced before it is used).
    /// Returns its id. Older keys stay for opening.
    pub fn rotate(&self) -> Result<String, PkiError> {
        let mut keys = self.keys.write().map_err(|_| PkiError::Crypto("keyring lock poisoned".into()))?;
        let k = new_key();
        let id = k.id.clone();
        let mut all: Vec<Key> = keys
            .iter()
            .map(|k| Key {
                id: k.id.clone(),
                bytes: k.bytes,
            })
            .collect();
        all.push(k);
        if !self.path.as_os_str().is_empty() {
            write_keyring(&self.path, &all)?;
        }
        *keys = all;
        Ok(id)
    }
}

/// Associated data for a token of an enrollment.
pub fn aad(enrollment: &str, field: &str) -> String {
    format!("{enrollment}/{field}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_rotate_and_bind_to_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.keys");
        let b = SecretBox::load_or_create(&path).unwrap();
        let s = b.seal(b"token", "A/unlock").unwrap();
        assert!(s.starts_with(PREFIX));
        assert_eq!(b.open(&s, "A/unlock").unwrap(), b"token");
        assert!(b.open(&s, "B/unlock").is_err(), "moved to another record");
        assert!(!b.needs_reseal(&s));
        b.rotate().unwrap();
        assert!(b.needs_reseal(&s));
        // Reloaded from disk: both keys there, old values still open.
        let b2 = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(b2.open(&s, "A/unlock").unwrap(), b"token");
        assert_eq!(b2.current_id(), b.current_id());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // Legacy plain base64.
        assert_eq!(b.open("dG9rZW4=", "A/unlock").unwrap(), b"token");
        assert!(b.needs_reseal("dG9rZW4="));
    }
}
