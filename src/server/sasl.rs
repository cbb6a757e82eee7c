//! Server-side SASL: SCRAM-SHA-1/256 (+PLUS with tls-exporter) and PLAIN. Sans-IO.
//!
//! The bundled server has to accept logins from the same clients the bridge talks to
//! (tokio-xmpp via the `sasl` crate, Conversations, Gajim, Dino, …), and the `sasl` crate's own
//! server half cannot be used: it rejects the standard `n,,` GS2 header. This module is that
//! server half, written as a pure state machine — bytes in, [`Step`] out, no sockets, no async, no
//! clock — so that every message shape a client might send can be unit-tested below, including
//! the RFC example exchanges byte for byte.
//!
//! # Flow
//!
//! 1. The stream code advertises [`ConnectionInfo::offered_mechanisms`] (or
//!    [`offered_mechanisms`]) in `<mechanisms/>`.
//! 2. On `<auth mechanism=…>` it parses the name with [`Mechanism::from_name`] (unknown →
//!    [`Failure::InvalidMechanism`]), base64-decodes the initial response (bad base64 →
//!    [`Failure::IncorrectEncoding`]) and calls [`ServerExchange::start`].
//! 3. Every [`Step::Challenge`] becomes a `<challenge/>`; every `<response/>` goes to
//!    [`ServerExchange::step`]; `<abort/>` is answered with [`Failure::Aborted`] by the caller.
//! 4. [`Step::Success`] becomes `<success/>` carrying `additional_data` (SCRAM's `v=…`, which lets
//!    the client verify that the server knew the password too); [`Step::Failure`] becomes
//!    `<failure><{condition_name}/></failure>`.
//!
//! # Security choices
//!
//! * **No passwords at rest.** The [`CredentialStore`] hands out [`ScramKeys`] (salt, iteration
//!   count, StoredKey, ServerKey), never a password or a password equivalent. PLAIN is verified
//!   by re-deriving those keys from the offered password.
//! * **Constant time.** Proofs, keys and channel-binding data are compared with
//!   [`subtle::ConstantTimeEq`], never `==`.
//! * **No user enumeration.** An unknown user (or one without keys for the requested hash) gets
//!   a normal-looking server-first message whose salt is an HMAC of the username under a
//!   per-process random secret (so it is stable across attempts) and [`DEFAULT_ITERATIONS`];
//!   the exchange then fails with `not-authorized` at the very end, after the same computations
//!   as for a wrong password. PLAIN runs PBKDF2 against fake keys for the same reason. What this
//!   cannot hide: the fake salt changes when the process restarts, and a store lookup that is
//!   slower for existing users (the caller's database) is visible in timing.
//! * **Channel binding.** `-PLUS` is offered and accepted only when the caller supplies this
//!   connection's RFC 9266 `tls-exporter` bytes, which are then required inside `c=`. A client
//!   that says `y` ("I can bind but you did not offer it") while we did offer `-PLUS` is being
//!   downgraded by someone in the middle and is refused (RFC 5802 §6).
//! * **PLAIN only over TLS.** It is left out of the offer list without TLS, and
//!   [`ServerExchange::start`] refuses it with `encryption-required` if a client asks anyway.
//! * **Bounded input.** Every message above [`MAX_MESSAGE_LEN`] bytes is refused before parsing;
//!   nothing here panics on client input (see the fuzz-style tests).
//! * **What is left to the caller:** rate-limiting attempts (each PLAIN attempt costs a PBKDF2
//!   run), refusing disabled accounts *after* [`Step::Success`] (so that only someone who knows the
//!   password learns that the account is disabled), and mapping the authenticated username to
//!   the account it normalises to (see [`CredentialStore`]).

use std::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The largest SASL message (after base64 decoding) this module will look at: 8 KiB.
///
/// Real SCRAM and PLAIN messages are a few hundred bytes at most; anything larger is refused
/// with [`Failure::MalformedRequest`] before any parsing, so a client cannot make the server
/// hash or copy arbitrarily large buffers.
pub const MAX_MESSAGE_LEN: usize = 8 * 1024;

/// The PBKDF2 iteration count used by [`new_keys`] and for the fake keys of unknown users.
///
/// 4096 is the minimum RFC 7677 §4 asks for and what most XMPP servers use. Raising it makes
/// offline guessing from a stolen store slower, but every SCRAM login then costs the *client*
/// that much more, and every PLAIN login costs the server that much more.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length of [`new_keys`] and of the fake keys of unknown users, in bytes.
const SALT_LEN: usize = 16;

/// Random bytes in the server nonce (base64-encoded: 32 printable characters).
const SERVER_NONCE_LEN: usize = 24;

/// A SASL mechanism this server implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, core::hash::Hash)]
pub enum Mechanism {
    /// `SCRAM-SHA-1` (RFC 5802), for older clients.
    ScramSha1,
    /// `SCRAM-SHA-1-PLUS`: SCRAM-SHA-1 bound to the TLS connection.
    ScramSha1Plus,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-256-PLUS`: SCRAM-SHA-256 bound to the TLS connection.
    ScramSha256Plus,
    /// `PLAIN` (RFC 4616): the password in clear, so only offered over TLS.
    Plain,
}

impl Mechanism {
    /// The IANA name, as used in `<mechanism/>` and `<auth mechanism=…>`.
    pub const fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism with this exact (upper-case) name, if we implement it.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Mechanism::ScramSha1,
            Mechanism::ScramSha1Plus,
            Mechanism::ScramSha256,
            Mechanism::ScramSha256Plus,
            Mechanism::Plain,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }

    /// The SCRAM hash, or `None` for PLAIN.
    pub const fn hash(self) -> Option<Hash> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(Hash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(Hash::Sha256),
            Mechanism::Plain => None,
        }
    }

    /// Whether this is a channel-binding (`-PLUS`) variant.
    pub const fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus)
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The mechanisms to advertise on a connection, strongest first.
///
/// `-PLUS` variants need both TLS and this connection's `tls-exporter` bytes (TLS 1.3; RFC 9266
/// defines no exporter binding for TLS 1.2 without extended master secret). PLAIN needs TLS.
/// Whatever is offered here is exactly what [`ServerExchange::start`] accepts for the same
/// [`ConnectionInfo`]; offering `-PLUS` is also what arms the `y,,` downgrade check.
pub fn offered_mechanisms(tls_active: bool, channel_binding_available: bool) -> Vec<Mechanism> {
    let mut offer = Vec::with_capacity(5);
    if tls_active && channel_binding_available {
        offer.extend([Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus]);
    }
    offer.extend([Mechanism::ScramSha256, Mechanism::ScramSha1]);
    if tls_active {
        offer.push(Mechanism::Plain);
    }
    offer
}

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
    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => Sha1::digest(data).to_vec(),
            Hash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, parts[0] || parts[1] || …)`.
    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
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
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
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

/// Where the exchange looks up a user's keys; provided by the caller.
///
/// `username` is passed exactly as the client sent it (after SCRAM's `=2C`/`=3D` unescaping),
/// not SASLprep'ed: in XMPP the SASL username is the account's localpart, which the client has
/// already nodeprep'ed, and SASLprep (which does no case folding) would not turn a sloppy one
/// into the stored form anyway. Normalising it — at least ASCII-lowercasing, ideally nodeprep —
/// is the store's job, and the caller should apply the same normalisation to
/// [`Step::Success`]'s `username` before binding a JID.
///
/// Return `None` for unknown users and for users without keys for `hash` (both end in
/// `not-authorized` without revealing which). A store that cannot reach its database should
/// rather not start the exchange and answer `temporary-auth-failure` itself.
pub trait CredentialStore {
    /// The keys of `username` for `hash`, if the user exists and has them.
    fn scram_keys(&self, username: &str, hash: Hash) -> Option<ScramKeys>;
}

impl<F> CredentialStore for F
where
    F: Fn(&str, Hash) -> Option<ScramKeys>,
{
    fn scram_keys(&self, username: &str, hash: Hash) -> Option<ScramKeys> {
        self(username, hash)
    }
}

/// What the exchange needs to know about the connection it runs on.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionInfo<'a> {
    /// The server's domain, so that an authorization identity of `user@domain` can be
    /// recognised as the user's own bare JID.
    pub domain: &'a str,
    /// Whether the stream is TLS-protected (direct TLS or after STARTTLS).
    pub tls_active: bool,
    /// This connection's RFC 9266 `tls-exporter` channel-binding bytes (32 bytes exported with
    /// label `EXPORTER-Channel-Binding` and no context), or `None` when unavailable (no TLS, or
    /// TLS 1.2). `Some` means `-PLUS` is offered; an empty slice counts as `None`.
    pub tls_exporter: Option<&'a [u8]>,
}

impl ConnectionInfo<'_> {
    /// [`offered_mechanisms`] for this connection.
    pub fn offered_mechanisms(&self) -> Vec<Mechanism> {
        offered_mechanisms(self.tls_active, self.binding().is_some())
    }

    /// The binding data, when `-PLUS` is offered.
    fn binding(&self) -> Option<&[u8]> {
        self.tls_exporter
            .filter(|data| self.tls_active && !data.is_empty())
    }
}

/// A SASL failure condition (RFC 6120 §6.5), sent as `<failure><{condition_name}/></failure>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, core::hash::Hash)]
pub enum Failure {
    /// The client sent `<abort/>`. Never produced here; the caller answers `<abort/>` with it.
    Aborted,
    /// The account is disabled. Never produced here: check it after [`Step::Success`], so that
    /// only someone who knows the password learns it.
    AccountDisabled,
    /// The credentials have expired. Never produced here (same advice as
    /// [`Failure::AccountDisabled`]).
    CredentialsExpired,
    /// PLAIN was requested on a connection without TLS.
    EncryptionRequired,
    /// Base64 inside a SCRAM message (`c=`, `p=`) is invalid. The caller should also use it for
    /// invalid base64 in the XML character data.
    IncorrectEncoding,
    /// The client asked to act as someone other than itself (authzid).
    InvalidAuthzid,
    /// The mechanism is unknown or was not offered on this connection (e.g. `-PLUS` without
    /// channel binding).
    InvalidMechanism,
    /// The message does not follow the mechanism's syntax, is too large, uses an unsupported
    /// mandatory extension (`m=`), mixes up channel-binding flags and mechanisms, or arrives after
    /// the exchange ended.
    MalformedRequest,
    /// The mechanism is too weak for this account. Never produced here.
    MechanismTooWeak,
    /// Wrong password, unknown user, channel-binding mismatch or downgrade: deliberately
    /// indistinguishable to the client.
    NotAuthorized,
    /// A temporary server-side error. Never produced here; for the caller's store errors.
    TemporaryAuthFailure,
}

impl Failure {
    /// The RFC 6120 element name, e.g. `not-authorized`.
    pub const fn condition_name(self) -> &'static str {
        match self {
            Failure::Aborted => "aborted",
            Failure::AccountDisabled => "account-disabled",
            Failure::CredentialsExpired => "credentials-expired",
            Failure::EncryptionRequired => "encryption-required",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::MechanismTooWeak => "mechanism-too-weak",
            Failure::NotAuthorized => "not-authorized",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.condition_name())
    }
}

/// What to send to the client next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `<challenge/>` with these raw bytes (the caller base64-encodes them; empty bytes
    /// mean an empty element) and feed the client's `<response/>` to [`ServerExchange::step`].
    Challenge(Vec<u8>),
    /// Authenticated. Send `<success/>` with `additional_data` (base64-encoded; empty for PLAIN).
    Success {
        /// The authentication identity, as the client sent it (see [`CredentialStore`]).
        username: String,
        /// SCRAM's server-final message `v=base64(ServerSignature)`; empty for PLAIN.
        additional_data: Vec<u8>,
    },
    /// Send `<failure/>` with this condition. The exchange is over.
    Failure(Failure),
}

/// Why an exchange failed: the condition for the client and a reason for the server's log.
#[derive(Debug, Clone, Copy)]
struct Reject {
    failure: Failure,
    detail: &'static str,
}

fn reject(failure: Failure, detail: &'static str) -> Reject {
    Reject { failure, detail }
}

fn malformed(detail: &'static str) -> Reject {
    reject(Failure::MalformedRequest, detail)
}

/// One SASL authentication attempt on one connection.
pub struct ServerExchange {
    mechanism: Mechanism,
    domain: String,
    binding: Option<Vec<u8>>,
    state: State,
    detail: Option<&'static str>,
    /// See [`ServerExchange::password_tried`].
    guessed: bool,
    /// Tests inject the RFC example nonces through this; always `None` otherwise.
    server_nonce: Option<String>,
}

enum State {
    /// Waiting for the PLAIN message or the SCRAM client-first message; `challenged` once we
    /// answered an empty initial response with an empty challenge.
    Initial { challenged: bool },
    /// SCRAM: server-first sent, waiting for client-final.
    ScramFinal(Box<ScramPending>),
    /// Success or failure has been returned.
    Done,
}

/// What SCRAM remembers between server-first and client-final.
struct ScramPending {
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

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial { .. } => "initial",
            State::ScramFinal(_) => "awaiting client-final",
            State::Done => "done",
        };
        f.debug_struct("ServerExchange")
            .field("mechanism", &self.mechanism)
            .field("state", &state)
            .field("detail", &self.detail)
            .finish()
    }
}

impl ServerExchange {
    /// Starts an exchange for `<auth mechanism=…>` with its decoded initial response (empty
    /// when absent or `=`; the client is then sent an empty challenge, RFC 6120 §6.4.2).
    ///
    /// Refuses mechanisms [`ConnectionInfo::offered_mechanisms`] would not offer: PLAIN without
    /// TLS (`encryption-required`), `-PLUS` without binding data (`invalid-mechanism`).
    pub fn start(
        mechanism: Mechanism,
        initial_response: &[u8],
        connection: &ConnectionInfo<'_>,
        store: &impl CredentialStore,
    ) -> (ServerExchange, Step) {
        Self::start_with_nonce(mechanism, initial_response, connection, store, None)
    }

    fn start_with_nonce(
        mechanism: Mechanism,
        initial_response: &[u8],
        connection: &ConnectionInfo<'_>,
        store: &impl CredentialStore,
        server_nonce: Option<String>,
    ) -> (ServerExchange, Step) {
        let mut exchange = ServerExchange {
            mechanism,
            domain: connection.domain.to_owned(),
            binding: connection.binding().map(<[u8]>::to_vec),
            state: State::Initial { challenged: false },
            detail: None,
            guessed: false,
            server_nonce,
        };
        let refused = if mechanism == Mechanism::Plain && !connection.tls_active {
            Some(reject(
                Failure::EncryptionRequired,
                "PLAIN requested without TLS",
            ))
        } else if mechanism.is_plus() && exchange.binding.is_none() {
            Some(reject(
                Failure::InvalidMechanism,
                "-PLUS requested without tls-exporter channel binding",
            ))
        } else {
            None
        };
        let step = match refused {
            Some(r) => exchange.finish(Err(r)),
            None => exchange.step(initial_response, store),
        };
        (exchange, step)
    }

    /// Feeds the client's decoded `<response/>` and says what to send next.
    ///
    /// After a [`Step::Success`] or [`Step::Failure`] every further call fails with
    /// `malformed-request`.
    pub fn step(&mut self, response: &[u8], store: &impl CredentialStore) -> Step {
        // Taking the state leaves `Done`: terminal unless a handler stores the next state.
        let state = std::mem::replace(&mut self.state, State::Done);
        let result = if response.len() > MAX_MESSAGE_LEN {
            Err(malformed("message longer than MAX_MESSAGE_LEN"))
        } else {
            match state {
                State::Initial { challenged } if response.is_empty() => {
                    if challenged {
                        Err(malformed("empty response to the empty challenge"))
                    } else {
                        self.state = State::Initial { challenged: true };
                        Ok(Step::Challenge(Vec::new()))
                    }
                }
                State::Initial { .. } => match self.mechanism.hash() {
                    None => {
                        self.guessed = true;
                        self.plain(response, store)
                    }
                    Some(hash) => self.scram_first(hash, response, store),
                },
                State::ScramFinal(pending) => {
                    self.guessed = true;
                    self.scram_final(*pending, response)
                }
                State::Done => Err(malformed("message after the exchange ended")),
            }
        };
        self.finish(result)
    }

    /// The mechanism this exchange runs.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the client got as far as presenting a password (PLAIN) or a proof (SCRAM
    /// client-final). A failure before that (unsupported mechanism or channel binding, a
    /// malformed first message, a refused `y` flag) tells an attacker nothing about the
    /// password, so the caller need not count it as a guess.
    pub fn password_tried(&self) -> bool {
        self.guessed
    }

    /// Why the exchange failed, for the server's log (e.g. "unknown user", "channel binding
    /// mismatch"). Never send it to the client: it would undo the no-enumeration design.
    pub fn failure_detail(&self) -> Option<&'static str> {
        self.detail
    }

    fn finish(&mut self, result: Result<Step, Reject>) -> Step {
        match result {
            Ok(step) => step,
            Err(r) => {
                self.state = State::Done;
                self.detail = Some(r.detail);
                Step::Failure(r.failure)
            }
        }
    }

    /// Whether `authzid` names `username` itself: the bare localpart, or `username@domain`
    /// (domain compared ASCII-case-insensitively). Anything else, including full JIDs, is
    /// someone else as far as this server is concerned.
    fn authzid_is_self(&self, authzid: &str, username: &str) -> bool {
        if authzid == username {
            return true;
        }
        match authzid.split_once('@') {
            Some((local, domain)) => {
                local == username
                    && !self.domain.is_empty()
                    && domain.eq_ignore_ascii_case(&self.domain)
            }
            None => false,
        }
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`.
    fn plain(&mut self, message: &[u8], store: &impl CredentialStore) -> Result<Step, Reject> {
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

    /// RFC 5802 client-first → server-first.
    fn scram_first(
        &mut self,
        hash: Hash,
        message: &[u8],
        store: &impl CredentialStore,
    ) -> Result<Step, Reject> {
        let text = scram_text(message)?;
        let first = ClientFirst::parse(text)?;

        let bind_to = match (&first.cbind, self.mechanism.is_plus(), &self.binding) {
            (CbindFlag::Bound(name), true, Some(data)) => {
                if *name != "tls-exporter" {
                    return Err(malformed("unsupported channel-binding type"));
                }
                Some(data.as_slice())
            }
            (CbindFlag::Bound(_), true, None) => {
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
            (CbindFlag::ClientSupports, false, Some(_)) => {
                return Err(reject(
                    Failure::NotAuthorized,
                    "client sent y (it thinks we offer no -PLUS, but we did): downgrade",
                ))
            }
            (CbindFlag::ClientSupports | CbindFlag::NotBound, false, None)
            | (CbindFlag::NotBound, false, Some(_)) => None,
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
            expected_cbind.extend_from_slice(data);
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
    fn scram_final(&mut self, pending: ScramPending, message: &[u8]) -> Result<Step, Reject> {
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

/// The GS2 channel-binding flag of a SCRAM client-first message.
#[derive(Debug, PartialEq, Eq)]
enum CbindFlag<'a> {
    /// `n`: the client does not support channel binding.
    NotBound,
    /// `y`: the client supports it but thinks the server does not.
    ClientSupports,
    /// `p=name`: the client binds with this channel-binding type.
    Bound(&'a str),
}

/// A parsed SCRAM client-first message.
#[derive(Debug)]
struct ClientFirst<'a> {
    cbind: CbindFlag<'a>,
    authzid: Option<String>,
    /// The GS2 header exactly as received, including its trailing comma.
    gs2_header: &'a str,
    /// client-first-message-bare exactly as received.
    bare: &'a str,
    username: String,
    client_nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    fn parse(text: &'a str) -> Result<Self, Reject> {
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid_part), Some(bare)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("client-first has no complete GS2 header"));
        };
        let cbind = match flag {
            "n" => CbindFlag::NotBound,
            "y" => CbindFlag::ClientSupports,
            _ => match flag.strip_prefix("p=") {
                Some(name)
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
                {
                    CbindFlag::Bound(name)
                }
                _ => return Err(malformed("bad GS2 channel-binding flag")),
            },
        };
        let authzid = if authzid_part.is_empty() {
            None
        } else {
            match authzid_part.strip_prefix("a=") {
                Some(name) => Some(decode_saslname(name)?),
                None => return Err(malformed("bad GS2 authzid")),
            }
        };
        let gs2_header = &text[..flag.len() + authzid_part.len() + 2];

        let attrs = split_attributes(bare)?;
        if attrs.iter().any(|(name, _)| *name == 'm') {
            // RFC 5802 §5.1: m= is a mandatory extension; servers that do not know it MUST fail.
            return Err(malformed("unsupported mandatory extension m="));
        }
        let (username, client_nonce) = match attrs.as_slice() {
            [('n', username), ('r', nonce), ..] => (*username, *nonce),
            _ => return Err(malformed("client-first-message-bare is not n=…,r=…")),
        };
        // Further attributes are extensions we do not implement; RFC 5802 lets us ignore them.
        if !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(malformed("client nonce has non-printable characters"));
        }
        Ok(ClientFirst {
            cbind,
            authzid,
            gs2_header,
            bare,
            username: decode_saslname(username)?,
            client_nonce,
        })
    }
}

/// A SCRAM message as text: UTF-8 without NUL (which no SCRAM attribute may contain).
fn scram_text(message: &[u8]) -> Result<&str, Reject> {
    let text = std::str::from_utf8(message).map_err(|_| malformed("SCRAM message is not UTF-8"))?;
    if text.contains('\0') {
        return Err(malformed("SCRAM message contains NUL"));
    }
    Ok(text)
}

/// Splits `a=value,b=value,…`: every attribute a single ASCII letter, `=`, and a non-empty
/// value (RFC 5802 `attr-val`).
fn split_attributes(text: &str) -> Result<Vec<(char, &str)>, Reject> {
    text.split(',')
        .map(|item| match item.as_bytes() {
            [name, b'=', _, ..] if name.is_ascii_alphabetic() => {
                // Both leading bytes are ASCII, so byte 2 is a char boundary.
                Ok((char::from(*name), &item[2..]))
            }
            _ => Err(malformed("SCRAM attribute is not letter=value")),
        })
        .collect()
}

/// Decodes a SCRAM `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` is an error
/// (RFC 5802 §5.1 says the server MUST fail), and the result must not be empty.
fn decode_saslname(name: &str) -> Result<String, Reject> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if escape.starts_with("=2C") {
            out.push(',');
        } else if escape.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(malformed("bad =XX escape in SCRAM username"));
        }
        rest = &escape[3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(malformed("empty SCRAM username"));
    }
    Ok(out)
}

fn new_server_nonce() -> String {
    let bytes: [u8; SERVER_NONCE_LEN] = rand::random();
    BASE64.encode(bytes)
}

/// Secret for the fake keys of unknown users; random per process.
fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(rand::random)
}

/// Plausible keys for a user that does not exist: a salt that is stable for the same username
/// within this process, [`DEFAULT_ITERATIONS`], and keys nobody can match (the exchange fails
/// regardless, because `known` is false).
fn fake_keys(hash: Hash, username: &str) -> ScramKeys {
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
    use rand::{Rng, SeedableRng};
    use sasl::client::mechanisms::{Plain, Scram};
    use sasl::client::Mechanism as ClientMechanism;
    use sasl::common::scram::{Sha1 as ClientSha1, Sha256 as ClientSha256};
    use sasl::common::{ChannelBinding, Credentials};
    use std::collections::HashMap;

    const DOMAIN: &str = "example.org";
    const EXPORTER: [u8; 32] = [7; 32];
    const OTHER_EXPORTER: [u8; 32] = [8; 32];

    const RFC5802_SALT: &str = "QSXCR+Q6sek8bf92";
    const RFC7677_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

    /// Keys are derived once per test binary: PBKDF2 is slow in debug builds.
    struct MemStore(HashMap<(String, Hash), ScramKeys>);

    impl CredentialStore for MemStore {
        fn scram_keys(&self, username: &str, hash: Hash) -> Option<ScramKeys> {
            self.0.get(&(username.to_owned(), hash)).cloned()
        }
    }

    fn store() -> &'static MemStore {
        static STORE: OnceLock<MemStore> = OnceLock::new();
        STORE.get_or_init(|| {
            let mut map = HashMap::new();
            let salt1 = BASE64.decode(RFC5802_SALT).unwrap();
            let salt256 = BASE64.decode(RFC7677_SALT).unwrap();
            map.insert(
                ("user".to_owned(), Hash::Sha1),
                derive_keys("pencil", Hash::Sha1, &salt1, 4096).unwrap(),
            );
            map.insert(
                ("user".to_owned(), Hash::Sha256),
                derive_keys("pencil", Hash::Sha256, &salt256, 4096).unwrap(),
            );
            for hash in [Hash::Sha1, Hash::Sha256] {
                map.insert(
                    ("alice".to_owned(), hash),
                    new_keys("correct horse", hash).unwrap(),
                );
                map.insert(("a,b=c".to_owned(), hash), new_keys("comma", hash).unwrap());
                map.insert(
                    ("nbsp".to_owned(), hash),
                    new_keys("pass\u{00A0}word", hash).unwrap(),
                );
            }
            map.insert(
                ("old".to_owned(), Hash::Sha1),
                new_keys("legacy", Hash::Sha1).unwrap(),
            );
            MemStore(map)
        })
    }

    fn tls_plus() -> ConnectionInfo<'static> {
        ConnectionInfo {
            domain: DOMAIN,
            tls_active: true,
            tls_exporter: Some(&EXPORTER),
        }
    }

    fn tls_only() -> ConnectionInfo<'static> {
        ConnectionInfo {
            domain: DOMAIN,
            tls_active: true,
            tls_exporter: None,
        }
    }

    fn plaintext() -> ConnectionInfo<'static> {
        ConnectionInfo {
            domain: DOMAIN,
            tls_active: false,
            tls_exporter: None,
        }
    }

    const SCRAMS: [Mechanism; 4] = [
        Mechanism::ScramSha1,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha256Plus,
    ];

    fn challenge(step: Step) -> Vec<u8> {
        match step {
            Step::Challenge(data) => data,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    fn failure(step: &Step) -> Failure {
        match step {
            Step::Failure(f) => *f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    // --- A small SCRAM client for hand-crafted messages --------------------------------------

    /// The value of attribute `name` in a server-first message.
    fn attr<'a>(message: &'a str, name: &str) -> &'a str {
        message
            .split(',')
            .find_map(|a| a.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .unwrap()
    }

    /// client-final for `server_first`: `c=` is base64(`cbind`), `extensions` go before `p=`.
    /// Returns the message and the server-final the server should answer with.
    fn client_final(
        hash: Hash,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        cbind: &[u8],
        extensions: &str,
    ) -> (String, String) {
        let salt = BASE64.decode(attr(server_first, "s")).unwrap();
        let iterations = attr(server_first, "i").parse().unwrap();
        let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted, &[b"Client Key"]);
        let stored_key = hash.digest(&client_key);
        let server_key = hash.hmac(&salted, &[b"Server Key"]);
        let without_proof = format!(
            "c={},r={}{}",
            BASE64.encode(cbind),
            attr(server_first, "r"),
            extensions
        );
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hash.hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_signature = hash.hmac(&server_key, &[auth_message.as_bytes()]);
        (
            format!("{without_proof},p={}", BASE64.encode(proof)),
            format!("v={}", BASE64.encode(server_signature)),
        )
    }

    /// Runs a whole hand-made SCRAM exchange; returns the final step.
    fn scram_with(
        mechanism: Mechanism,
        connection: &ConnectionInfo<'_>,
        gs2_header: &str,
        bare: &str,
        password: &str,
        cbind_data: &[u8],
    ) -> Step {
        let hash = mechanism.hash().unwrap();
        let (mut ex, step) = ServerExchange::start(
            mechanism,
            format!("{gs2_header}{bare}").as_bytes(),
            connection,
            store(),
        );
        let server_first = String::from_utf8(challenge(step)).unwrap();
        let mut cbind = gs2_header.as_bytes().to_vec();
        cbind.extend_from_slice(cbind_data);
        let (final_msg, expected) = client_final(hash, password, bare, &server_first, &cbind, "");
        let step = ex.step(final_msg.as_bytes(), store());
        if let Step::Success {
            additional_data, ..
        } = &step
        {
            assert_eq!(text(additional_data), expected);
        }
        step
    }

    // --- RFC examples ----------------------------------------------------------------------

    #[test]
    fn rfc5802_example_scram_sha1() {
        let (mut ex, step) = ServerExchange::start_with_nonce(
            Mechanism::ScramSha1,
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            &tls_plus(),
            store(),
            Some("3rfcNHYJY1ZVvWVs7j".to_owned()),
        );
        assert_eq!(
            text(&challenge(step)),
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        );
        let step = ex.step(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            store(),
        );
        assert_eq!(
            step,
            Step::Success {
                username: "user".to_owned(),
                additional_data: b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec(),
            }
        );
        assert_eq!(ex.failure_detail(), None);
    }

    #[test]
    fn rfc7677_example_scram_sha256() {
        let (mut ex, step) = ServerExchange::start_with_nonce(
            Mechanism::ScramSha256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            &tls_only(),
            store(),
            Some("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned()),
        );
        assert_eq!(
            text(&challenge(step)),
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let step = ex.step(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            store(),
        );
        assert_eq!(
            step,
            Step::Success {
                username: "user".to_owned(),
                additional_data: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
            }
        );
    }

    #[test]
    fn rfc_example_with_a_wrong_proof_is_not_authorized() {
        let (mut ex, _) = ServerExchange::start_with_nonce(
            Mechanism::ScramSha1,
            b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
            &tls_only(),
            store(),
            Some("3rfcNHYJY1ZVvWVs7j".to_owned()),
        );
        let step = ex.step(
            b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=w0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            store(),
        );
        assert_eq!(failure(&step), Failure::NotAuthorized);
        assert_eq!(
            ex.failure_detail(),
            Some("wrong password (client proof does not verify)")
        );
    }

    // --- Round trips with the `sasl` crate's client (what tokio-xmpp sends) ------------------

    /// Runs `client` against a server exchange the way tokio-xmpp does; returns the username or
    /// the failure. Also checks that the client accepts our server signature.
    fn run_client(
        mut client: Box<dyn ClientMechanism>,
        connection: &ConnectionInfo<'_>,
    ) -> Result<String, Failure> {
        let mechanism = Mechanism::from_name(client.name()).unwrap();
        let (mut ex, mut step) =
            ServerExchange::start(mechanism, &client.initial(), connection, store());
        for _ in 0..4 {
            match step {
                Step::Challenge(data) => {
                    let response = client.response(&data).unwrap();
                    step = ex.step(&response, store());
                }
                Step::Success {
                    username,
                    additional_data,
                } => {
                    client.success(&additional_data).unwrap();
                    return Ok(username);
                }
                Step::Failure(f) => return Err(f),
            }
        }
        panic!("exchange did not end");
    }

    fn credentials(user: &str, password: &str, binding: ChannelBinding) -> Credentials {
        Credentials::default()
            .with_username(user)
            .with_password(password)
            .with_channel_binding(binding)
    }

    fn sasl_client(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        binding: ChannelBinding,
    ) -> Box<dyn ClientMechanism> {
        let creds = credentials(user, password, binding);
        match mechanism.hash() {
            Some(Hash::Sha1) => Box::new(Scram::<ClientSha1>::from_credentials(creds).unwrap()),
            Some(Hash::Sha256) => Box::new(Scram::<ClientSha256>::from_credentials(creds).unwrap()),
            None => Box::new(Plain::from_credentials(creds).unwrap()),
        }
    }

    /// The client-side binding tokio-xmpp would use for `mechanism` on a TLS 1.3 connection.
    fn binding_for(mechanism: Mechanism, data: &[u8]) -> ChannelBinding {
        if mechanism.is_plus() {
            ChannelBinding::TlsExporter(data.to_vec())
        } else {
            ChannelBinding::None
        }
    }

    #[test]
    fn sasl_crate_client_round_trips_every_mechanism() {
        for mechanism in SCRAMS.into_iter().chain([Mechanism::Plain]) {
            for user in ["user", "alice"] {
                let password = if user == "user" {
                    "pencil"
                } else {
                    "correct horse"
                };
                let client =
                    sasl_client(mechanism, user, password, binding_for(mechanism, &EXPORTER));
                assert_eq!(client.name(), mechanism.name());
                assert_eq!(
                    run_client(client, &tls_plus()),
                    Ok(user.to_owned()),
                    "{mechanism} {user}"
                );
            }
        }
    }

    #[test]
    fn sasl_crate_client_wrong_password_is_not_authorized() {
        for mechanism in SCRAMS.into_iter().chain([Mechanism::Plain]) {
            let client = sasl_client(
                mechanism,
                "alice",
                "wrong",
                binding_for(mechanism, &EXPORTER),
            );
            assert_eq!(
                run_client(client, &tls_plus()),
                Err(Failure::NotAuthorized),
                "{mechanism}"
            );
        }
    }

    #[test]
    fn unknown_user_fails_only_at_the_end() {
        for mechanism in SCRAMS {
            let mut client =
                sasl_client(mechanism, "mallory", "x", binding_for(mechanism, &EXPORTER));
            let (mut ex, step) =
                ServerExchange::start(mechanism, &client.initial(), &tls_plus(), store());
            let server_first = String::from_utf8(challenge(step)).unwrap();
            // Looks like a real user's: 16-byte salt, default iterations.
            assert_eq!(
                BASE64.decode(attr(&server_first, "s")).unwrap().len(),
                SALT_LEN
            );
            assert_eq!(attr(&server_first, "i"), "4096");
            let response = client.response(server_first.as_bytes()).unwrap();
            assert_eq!(
                failure(&ex.step(&response, store())),
                Failure::NotAuthorized
            );
            assert_eq!(ex.failure_detail(), Some("unknown user"));

            // The fake salt is stable per user (a changing salt would give the game away) and
            // differs between users.
            let salt_of = |user: &str| {
                let gs2 = if mechanism.is_plus() {
                    "p=tls-exporter,,"
                } else {
                    "n,,"
                };
                let first = format!("{gs2}n={user},r=abc");
                let (_, step) =
                    ServerExchange::start(mechanism, first.as_bytes(), &tls_plus(), store());
                attr(&String::from_utf8(challenge(step)).unwrap(), "s").to_owned()
            };
            assert_eq!(salt_of("mallory"), salt_of("mallory"));
            assert_ne!(salt_of("mallory"), salt_of("trudy"));
        }
    }

    #[test]
    fn unknown_user_with_the_right_proof_for_fake_keys_still_fails() {
        // Even a client that somehow computes a proof matching the fake salt must fail.
        let step = scram_with(
            Mechanism::ScramSha256,
            &tls_only(),
            "n,,",
            "n=ghost,r=abc",
            "anything",
            &[],
        );
        assert_eq!(failure(&step), Failure::NotAuthorized);
    }

    #[test]
    fn user_without_keys_for_this_hash_is_treated_as_unknown() {
        // "old" only has SHA-1 keys.
        let client = sasl_client(
            Mechanism::ScramSha256,
            "old",
            "legacy",
            ChannelBinding::None,
        );
        assert_eq!(run_client(client, &tls_only()), Err(Failure::NotAuthorized));
        let client = sasl_client(Mechanism::ScramSha1, "old", "legacy", ChannelBinding::None);
        assert_eq!(run_client(client, &tls_only()), Ok("old".to_owned()));
    }

    // --- Channel binding -----------------------------------------------------------------

    #[test]
    fn plus_with_different_exporter_bytes_fails() {
        for mechanism in [Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus] {
            let client = sasl_client(
                mechanism,
                "alice",
                "correct horse",
                ChannelBinding::TlsExporter(OTHER_EXPORTER.to_vec()),
            );
            assert_eq!(run_client(client, &tls_plus()), Err(Failure::NotAuthorized));
        }
        let step = scram_with(
            Mechanism::ScramSha256Plus,
            &tls_plus(),
            "p=tls-exporter,,",
            "n=alice,r=abc",
            "correct horse",
            &EXPORTER[..31],
        );
        assert_eq!(failure(&step), Failure::NotAuthorized);
    }

    #[test]
    fn plus_with_hand_made_binding_succeeds() {
        let step = scram_with(
            Mechanism::ScramSha1Plus,
            &tls_plus(),
            "p=tls-exporter,,",
            "n=alice,r=abc",
            "correct horse",
            &EXPORTER,
        );
        assert!(matches!(step, Step::Success { .. }), "{step:?}");
    }

    #[test]
    fn y_flag_is_a_downgrade_when_plus_was_offered() {
        for mechanism in [Mechanism::ScramSha1, Mechanism::ScramSha256] {
            // Credentials::default() without a binding says `y,,`.
            let client = sasl_client(
                mechanism,
                "alice",
                "correct horse",
                ChannelBinding::Unsupported,
            );
            assert_eq!(client.name(), mechanism.name());
            assert_eq!(run_client(client, &tls_plus()), Err(Failure::NotAuthorized));
            // … but is fine where we did not offer -PLUS.
            let client = sasl_client(
                mechanism,
                "alice",
                "correct horse",
                ChannelBinding::Unsupported,
            );
            assert_eq!(run_client(client, &tls_only()), Ok("alice".to_owned()));
            let client = sasl_client(
                mechanism,
                "alice",
                "correct horse",
                ChannelBinding::Unsupported,
            );
            assert_eq!(run_client(client, &plaintext()), Ok("alice".to_owned()));
        }
        // Failing early is fine: it depends on nothing about the user.
        let (ex, step) = ServerExchange::start(
            Mechanism::ScramSha256,
            b"y,,n=alice,r=abc",
            &tls_plus(),
            store(),
        );
        assert_eq!(failure(&step), Failure::NotAuthorized);
        assert!(ex.failure_detail().unwrap().contains("downgrade"));
    }

    #[test]
    fn n_flag_without_plus_is_fine_even_when_plus_was_offered() {
        let client = sasl_client(
            Mechanism::ScramSha256,
            "alice",
            "correct horse",
            ChannelBinding::None,
        );
        assert_eq!(run_client(client, &tls_plus()), Ok("alice".to_owned()));
    }

    #[test]
    fn channel_binding_flag_and_mechanism_must_agree() {
        let cases: &[(Mechanism, &str, Failure)] = &[
            // p= with a non-PLUS mechanism.
            (
                Mechanism::ScramSha256,
                "p=tls-exporter,,n=alice,r=abc",
                Failure::MalformedRequest,
            ),
            // -PLUS without p=.
            (
                Mechanism::ScramSha256Plus,
                "n,,n=alice,r=abc",
                Failure::MalformedRequest,
            ),
            (
                Mechanism::ScramSha256Plus,
                "y,,n=alice,r=abc",
                Failure::MalformedRequest,
            ),
            // Other channel-binding types.
            (
                Mechanism::ScramSha256Plus,
                "p=tls-unique,,n=alice,r=abc",
                Failure::MalformedRequest,
            ),
            (
                Mechanism::ScramSha1Plus,
                "p=tls-server-end-point,,n=alice,r=abc",
                Failure::MalformedRequest,
            ),
        ];
        for (mechanism, message, expected) in cases {
            let (_, step) =
                ServerExchange::start(*mechanism, message.as_bytes(), &tls_plus(), store());
            assert_eq!(failure(&step), *expected, "{mechanism} {message}");
        }
    }

    #[test]
    fn plus_is_refused_without_binding_data() {
        for connection in [tls_only(), plaintext()] {
            let (_, step) = ServerExchange::start(
                Mechanism::ScramSha256Plus,
                b"p=tls-exporter,,n=alice,r=abc",
                &connection,
                store(),
            );
            assert_eq!(failure(&step), Failure::InvalidMechanism);
        }
        // An empty exporter counts as none; so does an exporter without TLS (caller bug).
        for connection in [
            ConnectionInfo {
                tls_exporter: Some(&[]),
                ..tls_plus()
            },
            ConnectionInfo {
                tls_active: false,
                ..tls_plus()
            },
        ] {
            let (_, step) = ServerExchange::start(
                Mechanism::ScramSha1Plus,
                b"p=tls-exporter,,n=alice,r=abc",
                &connection,
                store(),
            );
            assert_eq!(failure(&step), Failure::InvalidMechanism);
            assert!(!connection.offered_mechanisms().iter().any(|m| m.is_plus()));
        }
    }

    // --- Authorization identities ----------------------------------------------------------

    #[test]
    fn gs2_authzid_must_be_the_user() {
        for (authzid, ok) in [
            ("alice", true),
            ("alice@example.org", true),
            ("alice@EXAMPLE.org", true),
            ("bob", false),
            ("bob@example.org", false),
            ("alice@example.com", false),
            ("alice@example.org/phone", false),
            ("Alice", false),
        ] {
            if ok {
                let step = scram_with(
                    Mechanism::ScramSha256,
                    &tls_only(),
                    &format!("n,a={authzid},"),
                    "n=alice,r=abc",
                    "correct horse",
                    &[],
                );
                assert!(
                    matches!(step, Step::Success { ref username, .. } if username == "alice"),
                    "{authzid}: {step:?}"
                );
            } else {
                let (_, step) = ServerExchange::start(
                    Mechanism::ScramSha256,
                    format!("n,a={authzid},n=alice,r=abc").as_bytes(),
                    &tls_only(),
                    store(),
                );
                assert_eq!(failure(&step), Failure::InvalidAuthzid, "{authzid}");
            }
        }
    }

    #[test]
    fn gs2_authzid_is_part_of_the_channel_binding_check() {
        // The header in c= must be the one the client actually sent, authzid included.
        let (mut ex, step) = ServerExchange::start(
            Mechanism::ScramSha256,
            b"n,a=alice,n=alice,r=abc",
            &tls_only(),
            store(),
        );
        let server_first = String::from_utf8(challenge(step)).unwrap();
        let (final_msg, _) = client_final(
            Hash::Sha256,
            "correct horse",
            "n=alice,r=abc",
            &server_first,
            b"n,,",
            "",
        );
        assert_eq!(
            failure(&ex.step(final_msg.as_bytes(), store())),
            Failure::NotAuthorized
        );
    }

    #[test]
    fn plain_authzid_must_be_empty_or_the_user() {
        for (authzid, expected) in [
            ("", Ok("alice".to_owned())),
            ("alice", Ok("alice".to_owned())),
            ("alice@example.org", Ok("alice".to_owned())),
            ("bob@example.org", Err(Failure::InvalidAuthzid)),
            ("bob", Err(Failure::InvalidAuthzid)),
            ("alice@evil.example", Err(Failure::InvalidAuthzid)),
        ] {
            let message = format!("{authzid}\0alice\0correct horse");
            let (_, step) =
                ServerExchange::start(Mechanism::Plain, message.as_bytes(), &tls_only(), store());
            let got = match step {
                Step::Success {
                    username,
                    additional_data,
                } => {
                    assert!(additional_data.is_empty());
                    Ok(username)
                }
                Step::Failure(f) => Err(f),
                Step::Challenge(_) => panic!("PLAIN never challenges a non-empty message"),
            };
            assert_eq!(got, expected, "{authzid:?}");
        }
    }

    // --- PLAIN ---------------------------------------------------------------------------

    #[test]
    fn plain_requires_tls() {
        let (ex, step) = ServerExchange::start(
            Mechanism::Plain,
            b"\0alice\0correct horse",
            &plaintext(),
            store(),
        );
        assert_eq!(failure(&step), Failure::EncryptionRequired);
        assert_eq!(ex.mechanism(), Mechanism::Plain);
    }

    #[test]
    fn plain_falls_back_to_sha1_keys() {
        let (_, step) =
            ServerExchange::start(Mechanism::Plain, b"\0old\0legacy", &tls_only(), store());
        assert!(matches!(step, Step::Success { ref username, .. } if username == "old"));
        let (_, step) =
            ServerExchange::start(Mechanism::Plain, b"\0old\0legacx", &tls_only(), store());
        assert_eq!(failure(&step), Failure::NotAuthorized);
    }

    #[test]
    fn plain_unknown_user_and_wrong_password_look_the_same() {
        let (unknown, a) =
            ServerExchange::start(Mechanism::Plain, b"\0nobody\0pencil", &tls_only(), store());
        let (wrong, b) =
            ServerExchange::start(Mechanism::Plain, b"\0user\0pencil2", &tls_only(), store());
        assert_eq!(a, b);
        assert_eq!(failure(&a), Failure::NotAuthorized);
        assert_eq!(unknown.failure_detail(), Some("unknown user"));
        assert_eq!(wrong.failure_detail(), Some("wrong password"));
    }

    #[test]
    fn plain_password_is_saslpreped() {
        // Stored as "pass<NBSP>word"; SASLprep maps NBSP to a space, so both spellings work.
        for password in ["pass word", "pass\u{00A0}word", "pass\u{00AD} word"] {
            let message = format!("\0nbsp\0{password}");
            let (_, step) =
                ServerExchange::start(Mechanism::Plain, message.as_bytes(), &tls_only(), store());
            assert!(
                matches!(step, Step::Success { .. }),
                "{password:?}: {step:?}"
            );
        }
        // A password SASLprep prohibits can never match.
        let (_, step) = ServerExchange::start(
            Mechanism::Plain,
            b"\0nbsp\0pass\x07word",
            &tls_only(),
            store(),
        );
        assert_eq!(failure(&step), Failure::NotAuthorized);
    }

    #[test]
    fn plain_malformed_messages() {
        let cases: &[&[u8]] = &[
            b"alice",
            b"\0alice",
            b"alice\0correct horse",
            b"\0alice\0correct horse\0",
            b"\0\0correct horse",
            b"\0alice\0",
            b"\0\0",
            b"\0al\xffice\0correct horse",
            b"\xff\0alice\0correct horse",
            b"\0alice\0correct \xc3",
        ];
        for message in cases {
            let (_, step) = ServerExchange::start(Mechanism::Plain, message, &tls_only(), store());
            assert_eq!(failure(&step), Failure::MalformedRequest, "{message:?}");
        }
    }

    // --- Exchange mechanics ----------------------------------------------------------------

    #[test]
    fn empty_initial_response_gets_an_empty_challenge() {
        for mechanism in SCRAMS {
            let mut client = sasl_client(
                mechanism,
                "alice",
                "correct horse",
                binding_for(mechanism, &EXPORTER),
            );
            let (mut ex, step) = ServerExchange::start(mechanism, b"", &tls_plus(), store());
            assert_eq!(step, Step::Challenge(Vec::new()));
            let server_first = challenge(ex.step(&client.initial(), store()));
            let response = client.response(&server_first).unwrap();
            match ex.step(&response, store()) {
                Step::Success {
                    username,
                    additional_data,
                } => {
                    assert_eq!(username, "alice");
                    client.success(&additional_data).unwrap();
                }
                other => panic!("{mechanism}: {other:?}"),
            }
        }
        let (mut ex, step) = ServerExchange::start(Mechanism::Plain, b"", &tls_only(), store());
        assert_eq!(step, Step::Challenge(Vec::new()));
        assert!(matches!(
            ex.step(b"\0alice\0correct horse", store()),
            Step::Success { .. }
        ));
    }

    #[test]
    fn second_empty_message_is_malformed() {
        for mechanism in [Mechanism::ScramSha256, Mechanism::Plain] {
            let (mut ex, _) = ServerExchange::start(mechanism, b"", &tls_only(), store());
            assert_eq!(failure(&ex.step(b"", store())), Failure::MalformedRequest);
        }
    }

    #[test]
    fn messages_after_the_end_are_refused() {
        let (mut ex, step) = ServerExchange::start(
            Mechanism::Plain,
            b"\0alice\0correct horse",
            &tls_only(),
            store(),
        );
        assert!(matches!(step, Step::Success { .. }));
        assert_eq!(
            failure(&ex.step(b"\0alice\0correct horse", store())),
            Failure::MalformedRequest
        );
        let (mut ex, step) =
            ServerExchange::start(Mechanism::ScramSha1, b"x", &tls_only(), store());
        assert_eq!(failure(&step), Failure::MalformedRequest);
        assert_eq!(
            failure(&ex.step(b"n,,n=alice,r=abc", store())),
            Failure::MalformedRequest
        );
    }

    #[test]
    fn oversized_messages_are_refused() {
        let huge = vec![b'a'; MAX_MESSAGE_LEN + 1];
        for mechanism in SCRAMS.into_iter().chain([Mechanism::Plain]) {
            let (ex, step) = ServerExchange::start(mechanism, &huge, &tls_plus(), store());
            assert_eq!(failure(&step), Failure::MalformedRequest);
            assert!(ex.failure_detail().unwrap().contains("MAX_MESSAGE_LEN"));
        }
        // At the limit, a (long-nonced) message is still accepted …
        let prefix = "n,,n=alice,r=";
        let first = format!("{prefix}{}", "x".repeat(MAX_MESSAGE_LEN - prefix.len()));
        let (mut ex, step) = ServerExchange::start(
            Mechanism::ScramSha256,
            first.as_bytes(),
            &tls_only(),
            store(),
        );
        assert!(matches!(step, Step::Challenge(_)));
        // … and an oversized client-final is refused.
        assert_eq!(failure(&ex.step(&huge, store())), Failure::MalformedRequest);
    }

    #[test]
    fn username_escapes_are_decoded() {
        let step = scram_with(
            Mechanism::ScramSha256,
            &tls_only(),
            "n,,",
            "n=a=2Cb=3Dc,r=abc",
            "comma",
            &[],
        );
        assert!(
            matches!(step, Step::Success { ref username, .. } if username == "a,b=c"),
            "{step:?}"
        );
    }

    #[test]
    fn client_first_extensions_are_ignored_but_m_is_refused() {
        let step = scram_with(
            Mechanism::ScramSha256,
            &tls_only(),
            "n,,",
            "n=alice,r=abc,t=true,x=y",
            "correct horse",
            &[],
        );
        assert!(matches!(step, Step::Success { .. }), "{step:?}");
        for message in [
            "n,,m=ext,n=alice,r=abc",
            "n,,n=alice,r=abc,m=ext",
            "n,a=alice,m=x,n=alice,r=abc",
        ] {
            let (ex, step) = ServerExchange::start(
                Mechanism::ScramSha256,
                message.as_bytes(),
                &tls_only(),
                store(),
            );
            assert_eq!(failure(&step), Failure::MalformedRequest, "{message}");
            assert!(ex.failure_detail().is_some());
        }
    }

    #[test]
    fn client_final_extensions_are_signed_and_ignored() {
        let (mut ex, step) = ServerExchange::start(
            Mechanism::ScramSha256,
            b"n,,n=alice,r=abc",
            &tls_only(),
            store(),
        );
        let server_first = String::from_utf8(challenge(step)).unwrap();
        let (final_msg, expected) = client_final(
            Hash::Sha256,
            "correct horse",
            "n=alice,r=abc",
            &server_first,
            b"n,,",
            ",f=true",
        );
        match ex.step(final_msg.as_bytes(), store()) {
            Step::Success {
                additional_data, ..
            } => assert_eq!(text(&additional_data), expected),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_nonce_is_random_and_long_enough() {
        let nonce_of = || {
            let (_, step) = ServerExchange::start(
                Mechanism::ScramSha256,
                b"n,,n=alice,r=cnonce",
                &tls_only(),
                store(),
            );
            let server_first = String::from_utf8(challenge(step)).unwrap();
            let r = attr(&server_first, "r").to_owned();
            r.strip_prefix("cnonce").unwrap().to_owned()
        };
        let (a, b) = (nonce_of(), nonce_of());
        assert_ne!(a, b);
        assert!(BASE64.decode(&a).unwrap().len() >= 18);
        assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c) && c != b','));
    }

    #[test]
    fn malformed_client_first_messages() {
        use Failure::*;
        let cases: &[(&[u8], Failure)] = &[
            (b"n", MalformedRequest),
            (b"n,", MalformedRequest),
            (b"n,,", MalformedRequest),
            (b"n,,n=", MalformedRequest),
            (b"n,,n=alice", MalformedRequest),
            (b"n,,n=alice,r=", MalformedRequest),
            (b"n,,n=alice,r", MalformedRequest),
            (b"n,,r=abc,n=alice", MalformedRequest),
            (b"n,,n=,r=abc", MalformedRequest),
            (b"n,,n=alice,,r=abc", MalformedRequest),
            (b"n,,n=alice,r=abc,", MalformedRequest),
            (b"n,,n=alice,r=abc,x=", MalformedRequest),
            (b"n,,n=alice,r=abc,1=x", MalformedRequest),
            (b"n,,n=alice,r=abc,xy=z", MalformedRequest),
            (b"n,,N=alice,r=abc", MalformedRequest),
            (b",,n=alice,r=abc", MalformedRequest),
            (b"x,,n=alice,r=abc", MalformedRequest),
            (b"nn,,n=alice,r=abc", MalformedRequest),
            (b"p,,n=alice,r=abc", MalformedRequest),
            (b"p=,,n=alice,r=abc", MalformedRequest),
            (b"p=tls exporter,,n=alice,r=abc", MalformedRequest),
            (b"n,b=alice,n=alice,r=abc", MalformedRequest),
            (b"n,a=,n=alice,r=abc", MalformedRequest),
            (b"n,a=al=ice,n=alice,r=abc", MalformedRequest),
            (b"n,a=bob,n=alice,r=abc", InvalidAuthzid),
            (b"n,,n=al=ice,r=abc", MalformedRequest),
            (b"n,,n=al=2cice,r=abc", MalformedRequest),
            (b"n,,n=alice=2,r=abc", MalformedRequest),
            (b"n,,n=alice=,r=abc", MalformedRequest),
            (b"n,,n=al\0ice,r=abc", MalformedRequest),
            (b"n,,n=alice,r=a\x7fbc", MalformedRequest),
            (b"n,,n=alice,r=a bc", MalformedRequest),
            (b"n,,n=alice,r=ab\xc3\xa9c", MalformedRequest),
            (b"n,,n=al\xffice,r=abc", MalformedRequest),
            (b"\xef\xbb\xbfn,,n=alice,r=abc", MalformedRequest),
            (b"n,,m=x", MalformedRequest),
            (b" n,,n=alice,r=abc", MalformedRequest),
        ];
        for (message, expected) in cases {
            let (_, step) =
                ServerExchange::start(Mechanism::ScramSha256, message, &tls_only(), store());
            assert_eq!(
                failure(&step),
                *expected,
                "{:?}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn malformed_client_final_messages() {
        use Failure::*;
        let (_, step) = ServerExchange::start(
            Mechanism::ScramSha256,
            b"n,,n=alice,r=abc",
            &tls_only(),
            store(),
        );
        let server_first = String::from_utf8(challenge(step)).unwrap();
        let nonce = attr(&server_first, "r").to_owned();
        let (good, _) = client_final(
            Hash::Sha256,
            "correct horse",
            "n=alice,r=abc",
            &server_first,
            b"n,,",
            "",
        );
        let proof = attr(&good, "p").to_owned();
        let cases: Vec<(String, Failure)> = vec![
            (String::new(), MalformedRequest),
            ("c=biws".into(), MalformedRequest),
            (format!("c=biws,r={nonce}"), MalformedRequest),
            (format!("c=biws,r={nonce},p="), MalformedRequest),
            (format!("r={nonce},c=biws,p={proof}"), MalformedRequest),
            (format!("c=biws,p={proof}"), MalformedRequest),
            (format!("c=biws,r={nonce},p={proof},x=y"), MalformedRequest),
            (
                format!("c=biws,r={nonce},r={nonce},p={proof}"),
                MalformedRequest,
            ),
            (
                format!("c=biws,r={nonce},p=AAAA,p={proof}"),
                MalformedRequest,
            ),
            (format!("c=biws,,r={nonce},p={proof}"), MalformedRequest),
            (format!("c=biws,r={nonce},P={proof}"), MalformedRequest),
            (format!("c=!!!!,r={nonce},p={proof}"), IncorrectEncoding),
            (format!("c=biw,r={nonce},p={proof}"), IncorrectEncoding),
            (format!("c=biws,r={nonce},p=%%%%"), IncorrectEncoding),
            (
                format!("c=biws,r={nonce},p={}", &proof[1..]),
                IncorrectEncoding,
            ),
            (format!("c=biws,r={nonce},p=AAAA"), MalformedRequest),
            (format!("c=biws,r={nonce}x,p={proof}"), NotAuthorized),
            (format!("c=biws,r=abc,p={proof}"), NotAuthorized),
            // "y,," and "n,a=alice," instead of what was sent.
            (format!("c=eSws,r={nonce},p={proof}"), NotAuthorized),
            (
                format!("c=bixhPWFsaWNlLA==,r={nonce},p={proof}"),
                NotAuthorized,
            ),
            (format!("c=biws,r={nonce},p={proof}\0"), MalformedRequest),
            (format!("c=biws,r={nonce}\u{e9},p={proof}"), NotAuthorized),
        ];
        for (message, expected) in cases {
            let (mut ex, _) = ServerExchange::start_with_nonce(
                Mechanism::ScramSha256,
                b"n,,n=alice,r=abc",
                &tls_only(),
                store(),
                Some(nonce.strip_prefix("abc").unwrap().to_owned()),
            );
            assert_eq!(
                failure(&ex.step(message.as_bytes(), store())),
                expected,
                "{message}"
            );
        }
        // The good one really is good, with that same injected nonce.
        let (mut ex, _) = ServerExchange::start_with_nonce(
            Mechanism::ScramSha256,
            b"n,,n=alice,r=abc",
            &tls_only(),
            store(),
            Some(nonce.strip_prefix("abc").unwrap().to_owned()),
        );
        assert!(matches!(
            ex.step(good.as_bytes(), store()),
            Step::Success { .. }
        ));
        // Non-UTF-8.
        let (mut ex, _) = ServerExchange::start(
            Mechanism::ScramSha256,
            b"n,,n=alice,r=abc",
            &tls_only(),
            store(),
        );
        assert_eq!(
            failure(&ex.step(b"c=biws,r=\xff,p=AAAA", store())),
            MalformedRequest
        );
    }

    /// Every truncation and single-byte change of a valid client-final must fail, and nothing
    /// may panic.
    #[test]
    fn mutated_client_final_always_fails() {
        for mechanism in SCRAMS {
            let hash = mechanism.hash().unwrap();
            let (gs2, data): (&str, &[u8]) = if mechanism.is_plus() {
                ("p=tls-exporter,,", &EXPORTER)
            } else {
                ("n,,", &[])
            };
            let first = format!("{gs2}n=alice,r=abc");
            let (_, step) = ServerExchange::start_with_nonce(
                mechanism,
                first.as_bytes(),
                &tls_plus(),
                store(),
                Some("SNONCE".into()),
            );
            let server_first = String::from_utf8(challenge(step)).unwrap();
            let mut cbind = gs2.as_bytes().to_vec();
            cbind.extend_from_slice(data);
            let (good, _) = client_final(
                hash,
                "correct horse",
                "n=alice,r=abc",
                &server_first,
                &cbind,
                "",
            );
            let good = good.into_bytes();
            let fresh = || {
                ServerExchange::start_with_nonce(
                    mechanism,
                    first.as_bytes(),
                    &tls_plus(),
                    store(),
                    Some("SNONCE".into()),
                )
                .0
            };
            assert!(matches!(fresh().step(&good, store()), Step::Success { .. }));
            for len in 0..good.len() {
                let step = fresh().step(&good[..len], store());
                assert!(
                    matches!(step, Step::Failure(_)),
                    "{mechanism} truncated to {len}"
                );
            }
            for at in 0..good.len() {
                for byte in 0..=255u8 {
                    if byte == good[at] {
                        continue;
                    }
                    let mut bad = good.clone();
                    bad[at] = byte;
                    let step = fresh().step(&bad, store());
                    assert!(
                        matches!(step, Step::Failure(_)),
                        "{mechanism}: byte {at} set to {byte:#x}"
                    );
                }
            }
        }
    }

    /// Random and mutated input in every state: never a panic, never a success.
    #[test]
    fn fuzz_never_panics_or_succeeds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ca1ab1e);
        let pieces: &[&[u8]] = &[
            b"n",
            b"y",
            b"p",
            b"=",
            b",",
            b"a",
            b"r",
            b"c",
            b"m",
            b"s",
            b"i",
            b"v",
            b"e",
            b"\0",
            b"\xff",
            b"\xc3",
            b"=2C",
            b"=3D",
            b"alice",
            b"user",
            b"tls-exporter",
            b"biws",
            b"n,,",
            b"p=tls-exporter,,",
            b"n=alice,r=abc",
            b"==",
            b"AAAA",
            b"\xe2\x80\x8b",
            b"@",
        ];
        let random_message = |rng: &mut rand::rngs::StdRng| {
            let mut m = Vec::new();
            for _ in 0..rng.random_range(0..24) {
                if rng.random_bool(0.2) {
                    m.push(rng.random());
                } else {
                    m.extend_from_slice(pieces[rng.random_range(0..pieces.len())]);
                }
            }
            m
        };
        let connections = [tls_plus(), tls_only(), plaintext()];
        for round in 0..3000 {
            let mechanism = Mechanism::from_name(
                [
                    "SCRAM-SHA-1",
                    "SCRAM-SHA-1-PLUS",
                    "SCRAM-SHA-256",
                    "SCRAM-SHA-256-PLUS",
                ][round % 4],
            )
            .unwrap();
            let connection = &connections[round % 3];
            let first = random_message(&mut rng);
            let (mut ex, mut step) = ServerExchange::start(mechanism, &first, connection, store());
            for _ in 0..3 {
                assert!(!matches!(step, Step::Success { .. }), "{first:?}");
                step = ex.step(&random_message(&mut rng), store());
            }
            // A valid first message followed by garbage.
            let (mut ex, _) = ServerExchange::start(
                Mechanism::ScramSha1,
                b"n,,n=alice,r=abc",
                connection,
                store(),
            );
            let junk = random_message(&mut rng);
            assert!(
                matches!(ex.step(&junk, store()), Step::Failure(_)),
                "{junk:?}"
            );
        }
        // PLAIN parses cheaply but verifying costs a PBKDF2 run, so fewer rounds.
        for _ in 0..200 {
            let message = random_message(&mut rng);
            let (_, step) = ServerExchange::start(Mechanism::Plain, &message, &tls_only(), store());
            if message.is_empty() {
                assert_eq!(step, Step::Challenge(Vec::new()));
            } else {
                assert!(matches!(step, Step::Failure(_)), "{message:?}");
            }
        }
    }

    #[test]
    fn mutated_client_first_never_panics() {
        let good = b"p=tls-exporter,a=alice,n=alice,r=abcdef,x=y";
        for at in 0..good.len() {
            for byte in [
                0u8, b',', b'=', b'a', b'm', b'p', b'y', b'n', 0x80, 0xff, b' ',
            ] {
                let mut bad = good.to_vec();
                bad[at] = byte;
                for mechanism in SCRAMS {
                    let (_, step) = ServerExchange::start(mechanism, &bad, &tls_plus(), store());
                    assert!(!matches!(step, Step::Success { .. }));
                }
            }
        }
        for len in 0..good.len() {
            let (_, _) = ServerExchange::start(
                Mechanism::ScramSha256Plus,
                &good[..len],
                &tls_plus(),
                store(),
            );
        }
    }

    // --- What tokio-xmpp will pick ---------------------------------------------------------

    /// tokio-xmpp tries SCRAM-SHA-256, SCRAM-SHA-1, PLAIN in that order, each under the name
    /// its channel binding implies (`-PLUS` iff it has tls-exporter data, i.e. TLS 1.3).
    #[test]
    fn tokio_xmpp_selection_against_our_offer() {
        let pick = |offer: &[Mechanism], binding: bool| {
            let client_name = |m: Mechanism| {
                let cb = if binding {
                    ChannelBinding::TlsExporter(EXPORTER.to_vec())
                } else {
                    ChannelBinding::None
                };
                sasl_client(m, "alice", "correct horse", cb)
                    .name()
                    .to_owned()
            };
            [
                client_name(Mechanism::ScramSha256),
                client_name(Mechanism::ScramSha1),
                client_name(Mechanism::Plain),
            ]
            .into_iter()
            .find(|name| offer.iter().any(|m| m.name() == name))
        };
        // TLS 1.3 with binding: SCRAM-SHA-256-PLUS.
        assert_eq!(
            pick(&tls_plus().offered_mechanisms(), true).as_deref(),
            Some("SCRAM-SHA-256-PLUS")
        );
        // TLS 1.2 (no exporter): SCRAM-SHA-256.
        assert_eq!(
            pick(&tls_only().offered_mechanisms(), false).as_deref(),
            Some("SCRAM-SHA-256")
        );
        // Surprise worth knowing: a client with binding data against a server that offers no
        // -PLUS skips both SCRAMs and falls back to PLAIN.
        assert_eq!(
            pick(&tls_only().offered_mechanisms(), true).as_deref(),
            Some("PLAIN")
        );
    }

    /// Documents two limitations of the `sasl` 0.5 client (not of this server): it does not
    /// SASLprep the password and does not escape `,`/`=` in usernames.
    #[test]
    fn sasl_crate_client_quirks() {
        // SCRAM with a password SASLprep changes: the client hashes the raw NBSP, we stored the
        // prepared form, so it fails — while PLAIN (prepared on our side) works.
        let client = sasl_client(
            Mechanism::ScramSha256,
            "nbsp",
            "pass\u{00A0}word",
            ChannelBinding::None,
        );
        assert_eq!(run_client(client, &tls_only()), Err(Failure::NotAuthorized));
        let client = sasl_client(
            Mechanism::ScramSha256,
            "nbsp",
            "pass word",
            ChannelBinding::None,
        );
        assert_eq!(run_client(client, &tls_only()), Ok("nbsp".to_owned()));
        let client = sasl_client(
            Mechanism::Plain,
            "nbsp",
            "pass\u{00A0}word",
            ChannelBinding::None,
        );
        assert_eq!(run_client(client, &tls_only()), Ok("nbsp".to_owned()));
        // A username with ',' or '=' is sent unescaped, which RFC 5802 requires us to refuse.
        let client = sasl_client(
            Mechanism::ScramSha256,
            "a,b=c",
            "comma",
            ChannelBinding::None,
        );
        assert_eq!(
            run_client(client, &tls_only()),
            Err(Failure::MalformedRequest)
        );
    }

    // --- Keys, names, offers -------------------------------------------------------------

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
    fn mechanism_names_round_trip() {
        for m in SCRAMS.into_iter().chain([Mechanism::Plain]) {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(m.to_string(), m.name());
            assert_eq!(m.hash().is_none(), m == Mechanism::Plain);
        }
        assert_eq!(Mechanism::ScramSha256Plus.name(), "SCRAM-SHA-256-PLUS");
        assert_eq!(Mechanism::from_name("scram-sha-256"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::from_name(""), None);
        assert_eq!(Hash::Sha256.name(), "SHA-256");
    }

    #[test]
    fn offers_strongest_first() {
        use Mechanism::*;
        assert_eq!(
            offered_mechanisms(true, true),
            [
                ScramSha256Plus,
                ScramSha1Plus,
                ScramSha256,
                ScramSha1,
                Plain
            ]
        );
        assert_eq!(
            offered_mechanisms(true, false),
            [ScramSha256, ScramSha1, Plain]
        );
        assert_eq!(offered_mechanisms(false, false), [ScramSha256, ScramSha1]);
        assert_eq!(offered_mechanisms(false, true), [ScramSha256, ScramSha1]);
        assert_eq!(
            tls_plus().offered_mechanisms(),
            offered_mechanisms(true, true)
        );
    }

    #[test]
    fn failure_condition_names() {
        use Failure::*;
        let all = [
            (Aborted, "aborted"),
            (AccountDisabled, "account-disabled"),
            (CredentialsExpired, "credentials-expired"),
            (EncryptionRequired, "encryption-required"),
            (IncorrectEncoding, "incorrect-encoding"),
            (InvalidAuthzid, "invalid-authzid"),
            (InvalidMechanism, "invalid-mechanism"),
            (MalformedRequest, "malformed-request"),
            (MechanismTooWeak, "mechanism-too-weak"),
            (NotAuthorized, "not-authorized"),
            (TemporaryAuthFailure, "temporary-auth-failure"),
        ];
        for (failure, name) in all {
            assert_eq!(failure.condition_name(), name);
            assert_eq!(failure.to_string(), name);
        }
    }

    #[test]
    fn closures_are_credential_stores() {
        let keys = derive_keys("pw", Hash::Sha256, b"salty", 1).unwrap();
        let lookup = move |user: &str, hash: Hash| {
            (user == "carol" && hash == Hash::Sha256).then(|| keys.clone())
        };
        let (_, step) =
            ServerExchange::start(Mechanism::Plain, b"\0carol\0pw", &tls_only(), &lookup);
        assert!(matches!(step, Step::Success { .. }));
    }

    #[test]
    fn only_password_checks_count_as_guesses() {
        let store = store();
        let info = ConnectionInfo {
            domain: DOMAIN,
            tls_active: true,
            tls_exporter: Some(&EXPORTER),
        };
        // Refused at the first message: a binding type we do not support, and a `y` downgrade.
        let (ex, step) = ServerExchange::start(
            Mechanism::ScramSha256Plus,
            b"p=tls-unique,,n=user,r=abc",
            &info,
            store,
        );
        assert!(matches!(step, Step::Failure(_)));
        assert!(!ex.password_tried());
        let (ex, step) =
            ServerExchange::start(Mechanism::ScramSha256, b"y,,n=user,r=abc", &info, store);
        assert!(matches!(step, Step::Failure(Failure::NotAuthorized)));
        assert!(!ex.password_tried());
        // A wrong PLAIN password is a guess.
        let (ex, step) = ServerExchange::start(Mechanism::Plain, b"\0user\0wrong", &info, store);
        assert!(matches!(step, Step::Failure(Failure::NotAuthorized)));
        assert!(ex.password_tried());
    }
}
