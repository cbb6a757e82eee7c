//! PLAIN (RFC 4616): the password in clear, offered and accepted only over TLS. It is
//! verified against the stored SCRAM keys by deriving them again from the offered password,
//! so the store never needs the password itself.

use subtle::{Choice, ConstantTimeEq};

use super::keys::{derive_keys, fake_keys, Hash};
use super::{malformed, reject, CredentialStore, Failure, Reject, ServerExchange, Step};

impl ServerExchange {
    /// RFC 4616: `[authzid] NUL authcid NUL passwd`.
    pub(super) fn plain(
        &mut self,
        message: &[u8],
        store: &impl CredentialStore,
    ) -> Result<Step, Reject> {
        let parts: Vec<&[u8]> = message.split(|&b| b == 0).collect();
        let [authzid, authcid, password] = parts.as_slice() else {
            return Err(malformed(
                "PLAIN message is not authzid NUL authcid NUL passwd",
            ));
        };
        let (Ok(authzid), Ok(authcid), Ok(password)) = (
            std::str::from_utf8(authzid),
            std::str::from_utf8(authcid),
            std::str::from_utf8(password),
        ) else {
            return Err(malformed("PLAIN message is not UTF-8"));
        };
        if authcid.is_empty() {
            return Err(malformed("PLAIN authcid is empty"));
        }
        if password.is_empty() {
            return Err(malformed("PLAIN password is empty"));
        }
        if !authzid.is_empty() && !self.authzid_is_self(authzid, authcid) {
            return Err(reject(
                Failure::InvalidAuthzid,
                "PLAIN authzid names another user",
            ));
        }
        let stored = store
            .scram_keys(authcid, Hash::Sha256)
            .map(|keys| (Hash::Sha256, keys))
            .or_else(|| {
                store
                    .scram_keys(authcid, Hash::Sha1)
                    .map(|keys| (Hash::Sha1, keys))
            });
        let (hash, keys, known) = match stored {
            Some((hash, keys)) => (hash, keys, true),
            None => (Hash::Sha256, fake_keys(Hash::Sha256, authcid), false),
        };
        // Same PBKDF2 work for unknown users as for known ones.
        let Ok(derived) = derive_keys(password, hash, &keys.salt, keys.iterations) else {
            return Err(reject(
                Failure::NotAuthorized,
                "PLAIN password rejected by SASLprep",
            ));
        };
        let matches = derived.stored_key.ct_eq(&keys.stored_key)
            & derived.server_key.ct_eq(&keys.server_key)
            & Choice::from(u8::from(known));
        if bool::from(matches) {
            Ok(Step::Success {
                username: authcid.to_owned(),
                additional_data: Vec::new(),
            })
        } else if !known {
            Err(reject(Failure::NotAuthorized, "unknown user"))
        } else {
            Err(reject(Failure::NotAuthorized, "wrong password"))
        }
    }
}
