//! The SCRAM key material (RFC 5802 §3): which hash, the salted password and the keys derived
//! from it, and the fake keys that stand in for unknown users.
//!
//! This module owns the two types that describe stored credentials, [`Hash`] ("which SCRAM
//! hash") and [`ScramKeys`] ("what is kept per user and hash"). The server's store
//! (`crate::server::store`) persists exactly these types — the `scram.hash` column holds
//! [`Hash::name`] — so the login code and the database share one vocabulary and nothing
//! translates between them.

use std::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The PBKDF2 iteration count used by [`new_keys`] and for the fake keys of unknown users.
///
/// 4096 is the minimum RFC 7677 §4 asks for and what most XMPP servers use. Raising it makes
/// offline guessing from a stolen store slower, but every SCRAM login then costs the *client*
/// that much more, and every PLAIN login costs the server that much more.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length of [`new_keys`] and of the fake keys of unknown users, in bytes.
pub(super) const SALT_LEN: usize = 16;

/// The hash function of a SCRAM family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, core::hash::Hash)]
pub enum Hash {
    /// SHA-1 (SCRAM-SHA-1): 20-byte keys.
    Sha1,
    /// SHA-256 (SCRAM-SHA-256): 32-byte keys.
    Sha256,
}

impl Hash {
    /// The name used in mechanism names: `SHA-1` or `SHA-256`.
    pub const fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "SHA-1",
            Hash::Sha256 => "SHA-256",
        }
    }

    /// Output length in bytes, which is also the length of StoredKey, ServerKey and the proof.
    pub const fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
        }
    }

    /// `H(data)`.
    pub(super) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, parts[0] || parts[1] || …)`.
    pub(super) fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC accepts keys of every length (long ones are hashed), so this never fails.
            // Should it ever, the empty result fails closed: it equals no key and no proof.
            let Ok(mut mac) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
                return Vec::new();
            };
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Hash::Sha1 => run::<Hmac<Sha1>>(key, parts),
            Hash::Sha256 => run::<Hmac<Sha256>>(key, parts),
        }
    }

    /// `Hi(password, salt, iterations)` = PBKDF2 with HMAC-H and output length `H`.
    pub(super) fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.output_len()];
        match self {
            Hash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            Hash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
        }
        out
    }
}

/// What the credential store keeps per user and hash: enough to verify SCRAM and PLAIN logins,
/// not enough to log in as the user (RFC 5802 §3). Never the password.
///
/// `Debug` prints the salt and iteration count but not the keys: ServerKey lets its holder
/// impersonate the server, and StoredKey plus one sniffed exchange lets its holder log in.
#[derive(Clone)]
pub struct ScramKeys {
    /// The per-user random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("salt", &BASE64.encode(&self.salt))
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// Equal when every field is equal; the keys are compared in constant time, like everywhere
/// else in this module.
impl PartialEq for ScramKeys {
    fn eq(&self, other: &Self) -> bool {
        let same = self.salt.ct_eq(&other.salt)
            & self.stored_key.ct_eq(&other.stored_key)
            & self.server_key.ct_eq(&other.server_key);
        bool::from(same) && self.iterations == other.iterations
    }
}

impl Eq for ScramKeys {}

/// Why keys could not be derived from a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// SASLprep (RFC 4013) refused the password: control characters, unassigned or private-use
    /// code points, bad bidirectional text, …  Deliberately does not say which character, since
    /// that would put part of a password into a log.
    #[error("the password contains characters that SASLprep (RFC 4013) prohibits")]
    PasswordProhibited,
    /// The password is empty, or became empty after SASLprep removed characters that map to
    /// nothing (such as soft hyphens).
    #[error("the password is empty (after SASLprep)")]
    EmptyPassword,
    /// PBKDF2 needs at least one iteration.
    #[error("the SCRAM iteration count must be at least 1")]
    ZeroIterations,
}

/// Derives the [`ScramKeys`] of `password` for `hash`, `salt` and `iterations`.
///
/// The password is SASLprep'ed first, as RFC 5802 requires, so that e.g. a no-break space and a
/// space are the same password; passwords SASLprep rejects are refused rather than stored in a
/// form no conforming client could reproduce.
pub fn derive_keys(
    password: &str,
    hash: Hash,
    salt: &[u8],
    iterations: u32,
) -> Result<ScramKeys, SaslError> {
    if iterations == 0 {
        return Err(SaslError::ZeroIterations);
    }
    let prepared = stringprep::saslprep(password).map_err(|_| SaslError::PasswordProhibited)?;
    if prepared.is_empty() {
        return Err(SaslError::EmptyPassword);
    }
    let salted = hash.salted_password(prepared.as_bytes(), salt, iterations);
    let client_key = hash.hmac(&salted, &[b"Client Key"]);
    Ok(ScramKeys {
        salt: salt.to_vec(),
        iterations,
        stored_key: hash.digest(&client_key),
        server_key: hash.hmac(&salted, &[b"Server Key"]),
    })
}

/// Keys for a new or changed password: a fresh random 16-byte salt and [`DEFAULT_ITERATIONS`].
///
/// Fails like [`derive_keys`] for passwords SASLprep rejects (or that are empty).
pub fn new_keys(password: &str, hash: Hash) -> Result<ScramKeys, SaslError> {
    let salt: [u8; SALT_LEN] = rand::random();
    derive_keys(password, hash, &salt, DEFAULT_ITERATIONS)
}

/// Secret for the fake keys of unknown users; random per process.
fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(rand::random)
}

/// Plausible keys for a user that does not exist: a salt that is stable for the same username
/// within this process, [`DEFAULT_ITERATIONS`], and keys nobody can match (the exchange fails
/// regardless, because `known` is false).
pub(super) fn fake_keys(hash: Hash, username: &str) -> ScramKeys {
    let derive = |label: &[u8]| {
        Hash::Sha256.hmac(
            process_secret(),
            &[
                label,
                b"\0",
                hash.name().as_bytes(),
                b"\0",
                username.as_bytes(),
            ],
        )
    };
    let mut salt = derive(b"salt");
    salt.truncate(SALT_LEN);
    let mut stored_key = derive(b"stored-key");
    stored_key.truncate(hash.output_len());
    let mut server_key = derive(b"server-key");
    server_key.truncate(hash.output_len());
    ScramKeys {
        salt,
        iterations: DEFAULT_ITERATIONS,
        stored_key,
        server_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_keys_validates_and_saslpreps() {
        let salt = b"0123456789abcdef";
        assert_eq!(
            derive_keys("a\u{0007}b", Hash::Sha256, salt, 1).unwrap_err(),
            SaslError::PasswordProhibited
        );
        assert_eq!(
            derive_keys("\u{E000}", Hash::Sha256, salt, 1).unwrap_err(),
            SaslError::PasswordProhibited
        );
        assert_eq!(
            derive_keys("", Hash::Sha1, salt, 1).unwrap_err(),
            SaslError::EmptyPassword
        );
        assert_eq!(
            derive_keys("\u{00AD}", Hash::Sha1, salt, 1).unwrap_err(),
            SaslError::EmptyPassword
        );
        assert_eq!(
            derive_keys("x", Hash::Sha1, salt, 0).unwrap_err(),
            SaslError::ZeroIterations
        );
        let a = derive_keys("I\u{00AD}X", Hash::Sha256, salt, 2).unwrap();
        let b = derive_keys("IX", Hash::Sha256, salt, 2).unwrap();
        assert_eq!(a.stored_key, b.stored_key);
        assert_eq!(a.server_key, b.server_key);
        assert_eq!(a.stored_key.len(), 32);
        let c = derive_keys("IX", Hash::Sha1, salt, 2).unwrap();
        assert_eq!((c.stored_key.len(), c.server_key.len()), (20, 20));
        // The error message must not quote the password.
        let message = derive_keys("secret\u{0007}", Hash::Sha1, salt, 1)
            .unwrap_err()
            .to_string();
        assert!(!message.contains('\u{0007}'));
    }

    #[test]
    fn new_keys_use_random_salt_and_default_iterations() {
        let a = new_keys("pw", Hash::Sha1).unwrap();
        let b = new_keys("pw", Hash::Sha1).unwrap();
        assert_eq!(a.salt.len(), 16);
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        assert!(new_keys("", Hash::Sha256).is_err());
    }

    #[test]
    fn scram_keys_debug_hides_keys() {
        let keys = derive_keys("pencil", Hash::Sha1, b"salt", 1).unwrap();
        let debug = format!("{keys:?}");
        assert!(debug.contains("redacted"));
        assert!(!debug.contains(&format!("{:?}", keys.stored_key)));
        assert!(!debug.contains(&BASE64.encode(&keys.server_key)));
    }

    #[test]
    fn keys_are_equal_only_when_every_field_is() {
        let keys = derive_keys("pencil", Hash::Sha1, b"salt", 1).unwrap();
        assert_eq!(keys, keys.clone());
        let changes: [fn(&mut ScramKeys); 4] = [
            |k| k.salt.push(0),
            |k| k.iterations += 1,
            |k| k.stored_key[0] ^= 1,
            |k| k.server_key[19] ^= 1,
        ];
        for change in changes {
            let mut other = keys.clone();
            change(&mut other);
            assert_ne!(keys, other);
        }
    }
}
