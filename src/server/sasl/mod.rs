//! Server-side SASL: SCRAM-SHA-1/256 (+PLUS with tls-exporter or tls-server-end-point) and
//! PLAIN. Sans-IO.
//!
//! The bundled server has to accept logins from the same clients the bridge talks to
//! (tokio-xmpp via the `sasl` crate, Conversations, Gajim, Dino, …), and the `sasl` crate's own
//! server half cannot be used: it rejects the standard `n,,` GS2 header. This module is that
//! server half, written as a pure state machine — bytes in, [`Step`] out, no sockets, no async, no
//! clock — so that every message shape a client might send can be unit-tested (`tests.rs`),
//! including the RFC example exchanges byte for byte.
//!
//! # Flow
//!
//! 1. The stream code advertises [`ConnectionInfo::offered_mechanisms`] (or
//!    [`offered_mechanisms`]) in `<mechanisms/>`.
//! 2. On `<auth mechanism=…>` it parses the name with [`Mechanism::from_name`] (unknown →
//!    [`Failure::InvalidMechanism`]), base64-decodes the initial response (bad base64 →
//!    [`Failure::IncorrectEncoding`]) and calls [`ServerExchange::start`].
//! 3. Every [`Step::Challenge`] becomes a `<challenge/>`; every `<response/>` goes to
//!    [`ServerExchange::step`]; `<abort/>` is answered with `aborted` by the caller (the stream, which reads it).
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
//!   per-process random secret (so it is stable across attempts) and `DEFAULT_ITERATIONS`;
//!   the exchange then fails with `not-authorized` at the very end, after the same computations
//!   as for a wrong password. PLAIN runs PBKDF2 against fake keys for the same reason. What this
//!   cannot hide: the fake salt changes when the process restarts, and a store lookup that is
//!   slower for existing users (the caller's database) is visible in timing.
//! * **Channel binding.** `-PLUS` is offered and accepted only when the caller supplies this
//!   connection's channel-binding data: RFC 9266 `tls-exporter` (TLS 1.3) and RFC 5929
//!   `tls-server-end-point` (a hash of our certificate; any TLS version). The types are listed
//!   by [`ConnectionInfo::channel_binding_types`] for the XEP-0440 stream feature, and the data
//!   of the type the client names in `p=` is required inside `c=`; a type we do not have fails
//!   (RFC 5802 §6). A client that says `y` ("I can bind but you did not offer it") while we did
//!   offer `-PLUS` is being downgraded by someone in the middle and is refused (RFC 5802 §6).
//!   This holds even after the client asked for a type we lack (slixmpp 1.8.3 asks for
//!   `tls-unique`, undefined for TLS 1.3 by RFC 9266, then falls back to `y`): whoever sits in
//!   the middle could send such a request first, so accepting `y` after it would switch the
//!   downgrade check off for every client. A client without a usable type sends `n`.
//! * **PLAIN only over TLS.** It is left out of the offer list without TLS, and
//!   [`ServerExchange::start`] refuses it with `encryption-required` if a client asks anyway.
//! * **Bounded input.** Every message above [`MAX_MESSAGE_LEN`] bytes is refused before parsing;
//!   nothing here panics on client input (see the fuzz-style tests).
//! * **What is left to the caller:** rate-limiting attempts (each PLAIN attempt costs a PBKDF2
//!   run), refusing disabled accounts *after* [`Step::Success`] (so that only someone who knows the
//!   password learns that the account is disabled), and mapping the authenticated username to
//!   the account it normalises to (see [`CredentialStore`]).
//!
//! # Layout
//!
//! Split by role, as in Neon's `proxy/src/scram/`:
//!
//! * this file — the mechanisms and what is offered on a connection, the caller's interface
//!   ([`CredentialStore`], [`ConnectionInfo`], [`Step`], [`Failure`]) and [`ServerExchange`], the
//!   state machine that dispatches to the mechanisms;
//! * `keys` — [`Hash`](enum@Hash), [`ScramKeys`] and their derivation from a password. These are also
//!   the types the server's store persists (`crate::server::store` imports them from here), so
//!   a login reads keys from the database without any conversion;
//! * `scram` — the SCRAM exchange proper (server-first, proof and channel-binding checks);
//! * `messages` — the SCRAM message syntax (GS2 header, `attr=value`, `saslname`);
//! * `plain` — PLAIN;
//! * `tests` — the RFC example exchanges byte for byte, round trips with the `sasl` crate's
//!   client, and hostile input.

use std::fmt;

mod keys;
mod messages;
mod plain;
mod scram;

#[cfg(any(test, feature = "fuzzing"))]
pub use keys::derive_keys;
pub use keys::{new_keys, Hash, SaslError, ScramKeys};
use scram::ScramPending;

/// The largest SASL message (after base64 decoding) this module will look at: 8 KiB.
///
/// Real SCRAM and PLAIN messages are a few hundred bytes at most; anything larger is refused
/// with [`Failure::MalformedRequest`] before any parsing, so a client cannot make the server
/// hash or copy arbitrarily large buffers.
pub const MAX_MESSAGE_LEN: usize = 8 * 1024;

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
/// `-PLUS` variants need both TLS and channel-binding data of this connection
/// (`tls-exporter` on TLS 1.3, `tls-server-end-point` for most certificates). PLAIN needs TLS.
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
    /// This connection's RFC 5929 `tls-server-end-point` channel-binding bytes (the hash of our
    /// end-entity certificate, see `crate::tls::tls_server_end_point`), or `None` when
    /// unavailable (no TLS, or a certificate whose signature names no single hash). `Some`
    /// means `-PLUS` is offered; an empty slice counts as `None`.
    pub tls_server_end_point: Option<&'a [u8]>,
}

/// The channel-binding data of one connection, by type.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bindings {
    tls_exporter: Option<Vec<u8>>,
    tls_server_end_point: Option<Vec<u8>>,
}

impl Bindings {
    /// The data for the IANA channel-binding type `name`, if this connection has it.
    pub(crate) fn data(&self, name: &str) -> Option<&[u8]> {
        match name {
            TLS_EXPORTER => self.tls_exporter.as_deref(),
            TLS_SERVER_END_POINT => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.tls_exporter.is_none() && self.tls_server_end_point.is_none()
    }
}

/// RFC 9266's channel-binding type name.
pub const TLS_EXPORTER: &str = "tls-exporter";
/// RFC 5929 §4's channel-binding type name.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

impl ConnectionInfo<'_> {
    /// [`offered_mechanisms`] for this connection.
    pub fn offered_mechanisms(&self) -> Vec<Mechanism> {
        offered_mechanisms(self.tls_active, !self.bindings().is_empty())
    }

    /// The channel-binding types `-PLUS` accepts on this connection, strongest first, for the
    /// XEP-0440 `<sasl-channel-binding/>` feature; empty when `-PLUS` is not offered.
    pub fn channel_binding_types(&self) -> Vec<&'static str> {
        let bindings = self.bindings();
        [TLS_EXPORTER, TLS_SERVER_END_POINT]
            .into_iter()
            .filter(|name| bindings.data(name).is_some())
            .collect()
    }

    /// The binding data that `-PLUS` accepts (none without TLS).
    fn bindings(&self) -> Bindings {
        let usable = |data: Option<&[u8]>| {
            data.filter(|data| self.tls_active && !data.is_empty())
                .map(<[u8]>::to_vec)
        };
        Bindings {
            tls_exporter: usable(self.tls_exporter),
            tls_server_end_point: usable(self.tls_server_end_point),
        }
    }
}

/// A SASL failure condition (RFC 6120 §6.5) that an exchange can end with, sent as
/// `<failure><{condition_name}/></failure>`. The stream answers `<abort/>` with `aborted`
/// itself; the conditions about the account (`account-disabled`, `credentials-expired`,
/// `mechanism-too-weak`) and `temporary-auth-failure` are never sent: this server has no
/// disabled or expiring accounts, and a store error is answered like a wrong password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, core::hash::Hash)]
pub enum Failure {
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
    /// Wrong password, unknown user, channel-binding mismatch or downgrade: deliberately
    /// indistinguishable to the client.
    NotAuthorized,
}

impl Failure {
    /// The RFC 6120 element name, e.g. `not-authorized`.
    pub const fn condition_name(self) -> &'static str {
        match self {
            Failure::EncryptionRequired => "encryption-required",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::NotAuthorized => "not-authorized",
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
    bindings: Bindings,
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
            bindings: connection.bindings(),
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
        } else if mechanism.is_plus() && exchange.bindings.is_empty() {
            Some(reject(
                Failure::InvalidMechanism,
                "-PLUS requested without channel-binding data",
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
    #[cfg(test)]
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
}

#[cfg(test)]
mod tests;
