//! The SCRAM exchange (RFC 5802, RFC 7677 for SHA-256, RFC 9266 `tls-exporter` and RFC 5929
//! `tls-server-end-point` channel binding): client-first → server-first, client-final → server-final. The message syntax is
//! parsed in [`super::messages`]; the keys come from [`super::keys`].
//!
//! An unknown user gets [`fake_keys`] and the same computations as a known one, and fails only
//! at the very end, so the exchange does not reveal which accounts exist.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use subtle::{Choice, ConstantTimeEq};

use super::keys::{fake_keys, Hash, ScramKeys};
use super::messages::{scram_text, split_attributes, CbindFlag, ClientFirst};
use super::{malformed, reject, CredentialStore, Failure, Reject, ServerExchange, State, Step};

/// Random bytes in the server nonce (base64-encoded: 32 printable characters).
const SERVER_NONCE_LEN: usize = 24;

/// What SCRAM remembers between server-first and client-final.
pub(super) struct ScramPending {
    hash: Hash,
    username: String,
    /// `false` for unknown users: `keys` are fake and the exchange must fail at the end.
    known: bool,
    keys: ScramKeys,
    /// The decoded `c=` we expect: the GS2 header as received, plus the binding data for `p=`.
    expected_cbind: Vec<u8>,
    /// `cnonce + snonce`.
    nonce: String,
    /// `client-first-message-bare + "," + server-first-message + ","`.
    auth_message_prefix: String,
}

impl ServerExchange {
    /// RFC 5802 client-first → server-first.
    pub(super) fn scram_first(
        &mut self,
        hash: Hash,
        message: &[u8],
        store: &impl CredentialStore,
    ) -> Result<Step, Reject> {
        let text = scram_text(message)?;
        let first = ClientFirst::parse(text)?;

        let offered = !self.bindings.is_empty();
        let bind_to = match (&first.cbind, self.mechanism.is_plus(), offered) {
            (CbindFlag::Bound(name), true, true) => match self.bindings.data(name) {
                Some(data) => Some(data.to_vec()),
                // RFC 5802 §6: "If the channel binding flag was "p" and the server does not
                // support the indicated channel binding type, then the server MUST fail
                // authentication."
                None => return Err(malformed("unsupported channel-binding type")),
            },
            (CbindFlag::Bound(_), true, false) => {
                return Err(reject(
                    Failure::InvalidMechanism,
                    "-PLUS requested without channel binding",
                ))
            }
            (CbindFlag::Bound(_), false, _) => {
                return Err(malformed("p= channel binding with a non-PLUS mechanism"))
            }
            (CbindFlag::NotBound | CbindFlag::ClientSupports, true, _) => {
                return Err(malformed("-PLUS mechanism without p= channel binding"))
            }
            (CbindFlag::ClientSupports, false, true) => {
                return Err(reject(
                    Failure::NotAuthorized,
                    "client sent y (it thinks we offer no -PLUS, but we did): downgrade",
                ))
            }
            (CbindFlag::ClientSupports | CbindFlag::NotBound, false, false)
            | (CbindFlag::NotBound, false, true) => None,
        };

        if let Some(authzid) = &first.authzid {
            if !self.authzid_is_self(authzid, &first.username) {
                return Err(reject(
                    Failure::InvalidAuthzid,
                    "SCRAM authzid names another user",
                ));
            }
        }

        let (keys, known) = match store.scram_keys(&first.username, hash) {
            Some(keys) => (keys, true),
            None => (fake_keys(hash, &first.username), false),
        };
        let server_nonce = self.server_nonce.take().unwrap_or_else(new_server_nonce);
        let nonce = format!("{}{}", first.client_nonce, server_nonce);
        let server_first = format!(
            "r={},s={},i={}",
            nonce,
            BASE64.encode(&keys.salt),
            keys.iterations
        );
        let mut expected_cbind = first.gs2_header.as_bytes().to_vec();
        if let Some(data) = bind_to {
            expected_cbind.extend_from_slice(&data);
        }
        let auth_message_prefix = format!("{},{},", first.bare, server_first);
        self.state = State::ScramFinal(Box::new(ScramPending {
            hash,
            username: first.username,
            known,
            keys,
            expected_cbind,
            nonce,
            auth_message_prefix,
        }));
        Ok(Step::Challenge(server_first.into_bytes()))
    }

    /// RFC 5802 client-final → server-final (in `<success/>`) or `not-authorized`.
    pub(super) fn scram_final(
        &mut self,
        pending: ScramPending,
        message: &[u8],
    ) -> Result<Step, Reject> {
        let text = scram_text(message)?;
        // The proof is the last attribute; no value may contain ',', so the last comma ends
        // client-final-message-without-proof, which is what the AuthMessage signs.
        let Some((without_proof, proof_attr)) = text.rsplit_once(',') else {
            return Err(malformed("client-final has no proof"));
        };
        let Some(proof_b64) = proof_attr.strip_prefix("p=") else {
            return Err(malformed("client-final does not end with p="));
        };
        let attrs = split_attributes(without_proof)?;
        let (cbind_b64, nonce) = match attrs.as_slice() {
            [('c', cbind), ('r', nonce), extensions @ ..] => {
                if extensions
                    .iter()
                    .any(|(name, _)| matches!(name, 'c' | 'r' | 'p'))
                {
                    return Err(malformed("repeated attribute in client-final"));
                }
                (*cbind, *nonce)
            }
            _ => return Err(malformed("client-final does not start with c=…,r=…")),
        };
        let cbind = BASE64
            .decode(cbind_b64)
            .map_err(|_| reject(Failure::IncorrectEncoding, "c= is not valid base64"))?;
        let proof = BASE64
            .decode(proof_b64)
            .map_err(|_| reject(Failure::IncorrectEncoding, "p= is not valid base64"))?;
        let hash = pending.hash;
        if proof.len() != hash.output_len() {
            return Err(malformed("p= has the wrong length for this hash"));
        }

        let mut auth_message = pending.auth_message_prefix.into_bytes();
        auth_message.extend_from_slice(without_proof.as_bytes());
        let keys = &pending.keys;
        let client_signature = hash.hmac(&keys.stored_key, &[&auth_message]);
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let proof_ok = hash.digest(&client_key).ct_eq(&keys.stored_key);
        let cbind_ok = cbind.ct_eq(&pending.expected_cbind);
        let nonce_ok = nonce.as_bytes().ct_eq(pending.nonce.as_bytes());
        let known = Choice::from(u8::from(pending.known));

        if bool::from(proof_ok & cbind_ok & nonce_ok & known) {
            let server_signature = hash.hmac(&keys.server_key, &[&auth_message]);
            return Ok(Step::Success {
                username: pending.username,
                additional_data: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            });
        }
        let detail = if !bool::from(cbind_ok) {
            "channel-binding data (c=) does not match this connection"
        } else if !bool::from(nonce_ok) {
            "nonce in client-final does not match"
        } else if !pending.known {
            "unknown user"
        } else {
            "wrong password (client proof does not verify)"
        };
        Err(reject(Failure::NotAuthorized, detail))
    }
}

fn new_server_nonce() -> String {
    let bytes: [u8; SERVER_NONCE_LEN] = rand::random();
    BASE64.encode(bytes)
}
