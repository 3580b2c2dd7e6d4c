//! The console's secrets: operators' passwords (generated, stored as Argon2id hashes), the
//! session key (HMAC-SHA256, from a secret file in the data dir), session cookies
//! (`<id>.<mac>`, the id 256 random bits, only its SHA-256 stored) and CSRF tokens (an HMAC
//! of the session id, so a token is valid for its own session only). Nothing here logs.

use std::io::Write;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use hmac::{KeyInit, Mac};
use rand::TryRngCore;
use sha2::{Digest, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// Characters of a generated password: letters and digits, 62 symbols, so 22 characters
/// carry about 131 bits.
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Length of a generated password.
pub const PASSWORD_CHARS: usize = 22;
/// Longest password a sign-in form may submit (Argon2 hashes any length; the bound keeps a
/// request from making it hash megabytes).
pub const MAX_PASSWORD_BYTES: usize = 256;
/// The secret file in the data dir the session key is derived from.
pub const SECRET_FILE: &str = "ui-session.secret";
/// Shortest secret file accepted, in bytes.
const MIN_SECRET_BYTES: usize = 32;

/// Why a secret could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The operating system gave no random bytes.
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    /// The secret file could not be read or written.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        error: std::io::Error,
    },
    /// The secret file is too short to derive a key from.
    #[error("{0} holds fewer than 32 bytes; remove it to have a new one generated")]
    Short(String),
    /// Hashing failed (parameters out of range: a bug).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A new password from the operating system's random source (rejection sampling, so every
/// character is equally likely).
pub fn generate_password() -> Result<String, SecretError> {
    let mut out = String::with_capacity(PASSWORD_CHARS);
    while out.len() < PASSWORD_CHARS {
        for b in random_bytes::<32>()? {
            // 248 = 4 * 62: bytes above it would favour the first symbols.
            if b < 248 && out.len() < PASSWORD_CHARS {
                out.push(char::from(
                    PASSWORD_ALPHABET[usize::from(b) % PASSWORD_ALPHABET.len()],
                ));
            }
        }
    }
    Ok(out)
}

/// The Argon2id PHC string of `password` (default parameters: 19 MiB, 2 passes), with a
/// random salt. CPU-bound for tens of milliseconds: call from a blocking thread.
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `stored`. `None` for `stored` checks against a
/// fixed hash, so an unknown name costs the same time as a wrong password.
/// CPU-bound: call from a blocking thread.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        hash_password("not the password of anyone").unwrap_or_default()
    });
    let (phc, real) = match stored {
        Some(s) => (s, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

/// The key sessions and CSRF tokens are signed with. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// A session id in clear, as the cookie carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(..)")
    }
}

impl SessionId {
    /// A new id: 32 random bytes in hex.
    pub fn generate() -> Result<SessionId, SecretError> {
        Ok(SessionId(hex(&random_bytes::<32>()?)))
    }

    /// What the store knows the session by: the hex SHA-256 of the id.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }
}

impl SessionKey {
    /// The key derived from `DATA_DIR/ui-session.secret`, which is created (32 random bytes,
    /// mode 0600) when missing. Nodes sharing a database and a secret file accept each
    /// other's cookies.
    pub fn load_or_create(data_dir: &Path) -> Result<SessionKey, SecretError> {
        let path = data_dir.join(SECRET_FILE);
        let file_error = |error| SecretError::File {
            path: path.display().to_string(),
            error,
        };
        let secret = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = random_bytes::<32>()?;
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                match options.open(&path) {
                    Ok(mut file) => {
                        file.write_all(&bytes).map_err(file_error)?;
                        file.sync_all().map_err(file_error)?;
                        bytes.to_vec()
                    }
                    // Another incarnation made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read(&path).map_err(file_error)?
                    }
                    Err(e) => return Err(file_error(e)),
                }
            }
            Err(e) => return Err(file_error(e)),
        };
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretError::Short(path.display().to_string()));
        }
        Ok(SessionKey::derive(&secret))
    }

    /// The key derived from a secret's bytes.
    pub fn derive(secret: &[u8]) -> SessionKey {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(b"chom ui session key v1");
        SessionKey(mac.finalize().into_bytes().into())
    }

    fn mac(&self, purpose: &[u8], id: &SessionId) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose);
        mac.update(id.0.as_bytes());
        mac
    }

    /// The cookie value of a session: `<id>.<hex HMAC>`.
    pub fn cookie(&self, id: &SessionId) -> String {
        let tag = self.mac(b"session:", id).finalize().into_bytes();
        format!("{}.{}", id.0, hex(&tag))
    }

    /// The session id of a cookie value whose signature holds (compared in constant time).
    pub fn open_cookie(&self, value: &str) -> Option<SessionId> {
        let (id, tag) = value.split_once('.')?;
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let id = SessionId(id.to_owned());
        let tag = unhex(tag)?;
        self.mac(b"session:", &id).verify_slice(&tag).ok()?;
        Some(id)
    }

    /// The CSRF token of a session.
    pub fn csrf(&self, id: &SessionId) -> String {
        hex(&self.mac(b"csrf:", id).finalize().into_bytes())
    }

    /// Whether `token` is the CSRF token of session `id` (constant time).
    pub fn csrf_holds(&self, id: &SessionId, token: &str) -> bool {
        unhex(token).is_some_and(|tag| self.mac(b"csrf:", id).verify_slice(&tag).is_ok())
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_verify() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), PASSWORD_CHARS);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        let stored = hash_password(&a).unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(verify_password(&a, Some(&stored)));
        assert!(!verify_password(&b, Some(&stored)));
        assert!(!verify_password(&a, None), "an unknown user never signs in");
        assert!(!verify_password(&a, Some("garbage")));
    }

    #[test]
    fn cookies_and_csrf_tokens_are_bound_to_key_and_session() {
        let key = SessionKey::derive(&[7; 32]);
        let other = SessionKey::derive(&[8; 32]);
        let id = SessionId::generate().unwrap();
        let cookie = key.cookie(&id);
        assert_eq!(key.open_cookie(&cookie), Some(id.clone()));
        assert_eq!(other.open_cookie(&cookie), None, "another key's cookie");
        let mut forged = cookie.clone();
        forged.replace_range(0..1, if cookie.starts_with('a') { "b" } else { "a" });
        assert_eq!(key.open_cookie(&forged), None, "a changed id");
        assert_eq!(key.open_cookie("x.y"), None);
        let csrf = key.csrf(&id);
        assert!(key.csrf_holds(&id, &csrf));
        let id2 = SessionId::generate().unwrap();
        assert!(!key.csrf_holds(&id2, &csrf), "another session's token");
        assert!(!key.csrf_holds(&id, ""));
        assert_eq!(id.hash().len(), 64);
    }

    #[test]
    fn the_secret_file_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("chom-ui-key-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = SessionKey::load_or_create(&dir).unwrap();
        let b = SessionKey::load_or_create(&dir).unwrap();
        assert_eq!(a.0, b.0, "the second start reads the same secret");
        let mode = std::fs::metadata(dir.join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.join(SECRET_FILE), b"short").unwrap();
        assert!(matches!(
            SessionKey::load_or_create(&dir),
            Err(SecretError::Short(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
