//! The server-side SASL state machine (`server::sasl`) driven by arbitrary client messages.
//!
//! Input: one byte choosing the mechanism (`% 5`) and the connection (`/ 5 % 3`: TLS with
//! channel binding, TLS without, plain text), then the client's messages separated by `0xFF`
//! bytes (which UTF-8 never contains): the initial response, then one response per challenge.
//!
//! So that the fuzzer can reach a successful login, three placeholders in a response are filled
//! in like a real client would: `{r}` with the nonce of the last server-first message, `{c}` with
//! the base64 channel-binding data the server expects, and a trailing `,p={p}` with the proof
//! for the account's real password.
//!
//! Checks: no panic; a finished exchange stays finished; and every success is checked
//! independently: a known account, an authorization identity that is the user itself, and
//! (PLAIN) the account's password or (SCRAM) the right nonce, channel binding and proof, with
//! the right server signature.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use mqtt2xmpp::server::sasl::{
    derive_keys, ConnectionInfo, Failure, Hash, Mechanism, ScramKeys, ServerExchange, Step,
};
use sha1::Sha1;
use sha2::{Digest, Sha256};

const DOMAIN: &str = "example.org";
const EXPORTER: [u8; 32] = [7; 32];
const MECHANISMS: [Mechanism; 5] = [
    Mechanism::ScramSha1,
    Mechanism::ScramSha1Plus,
    Mechanism::ScramSha256,
    Mechanism::ScramSha256Plus,
    Mechanism::Plain,
];

/// Accounts and passwords. `user`/`pencil` with the salts of the RFC 5802 and RFC 7677 examples.
const ACCOUNTS: [(&str, &str); 3] = [
    ("user", "pencil"),
    ("alice", "correct horse"),
    ("a,b=c", "pass\u{00A0}word"),
];

struct Account {
    keys: ScramKeys,
    client_key: Vec<u8>,
}

fn accounts() -> &'static HashMap<(String, Hash), Account> {
    static ACCOUNTS_KEYS: OnceLock<HashMap<(String, Hash), Account>> = OnceLock::new();
    ACCOUNTS_KEYS.get_or_init(|| {
        let mut map = HashMap::new();
        for (user, password) in ACCOUNTS {
            for hash in [Hash::Sha1, Hash::Sha256] {
                let (salt, iterations) = match (user, hash) {
                    ("user", Hash::Sha1) => (BASE64.decode("QSXCR+Q6sek8bf92").unwrap(), 4096),
                    ("user", Hash::Sha256) => {
                        (BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(), 4096)
                    }
                    // Few iterations: PLAIN runs PBKDF2 on every attempt.
                    _ => (format!("salt of {user}").into_bytes(), 8),
                };
                let keys = derive_keys(password, hash, &salt, iterations).unwrap();
                let prepared = stringprep::saslprep(password).unwrap();
                let salted = salted_password(hash, prepared.as_bytes(), &salt, iterations);
                let client_key = hmac(hash, &salted, b"Client Key");
                assert_eq!(digest(hash, &client_key), keys.stored_key);
                map.insert((user.to_string(), hash), Account { keys, client_key });
            }
        }
        map
    })
}

fn lookup(username: &str, hash: Hash) -> Option<ScramKeys> {
    accounts()
        .get(&(username.to_string(), hash))
        .map(|a| a.keys.clone())
}

fn hmac(hash: Hash, key: &[u8], data: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha1 => {
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap();
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Hash::Sha256 => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

fn digest(hash: Hash, data: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha1 => Sha1::digest(data).to_vec(),
        Hash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

fn salted_password(hash: Hash, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0; hash.output_len()];
    match hash {
        Hash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
        Hash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
    }
    out
}

/// The SCRAM attribute `name` of a message, if present.
fn attr(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|a| {
        let mut chars = a.chars();
        (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &a[2..])
    })
}

/// `saslname` decoding as RFC 5802 defines it (`=2C`, `=3D`), for the oracle.
fn decode_saslname(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

/// What the client said in its SCRAM client-first message, for the oracle.
struct First {
    gs2_header: String,
    bare: String,
}

fn scram_first(message: &[u8]) -> Option<First> {
    let text = std::str::from_utf8(message).ok()?;
    let mut parts = text.splitn(3, ',');
    let (flag, authzid, bare) = (parts.next()?, parts.next()?, parts.next()?);
    Some(First {
        gs2_header: format!("{flag},{authzid},"),
        bare: bare.to_string(),
    })
}

fn authzid_is_self(authzid: &str, user: &str) -> bool {
    authzid.is_empty()
        || authzid == user
        || authzid
            .split_once('@')
            .is_some_and(|(local, domain)| local == user && domain.eq_ignore_ascii_case(DOMAIN))
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let mechanism = MECHANISMS[usize::from(config % 5)];
    let connection = match config / 5 % 3 {
        0 => ConnectionInfo {
            domain: DOMAIN,
            tls_active: true,
            tls_exporter: Some(&EXPORTER),
        },
        1 => ConnectionInfo {
            domain: DOMAIN,
            tls_active: true,
            tls_exporter: None,
        },
        _ => ConnectionInfo {
            domain: DOMAIN,
            tls_active: false,
            tls_exporter: None,
        },
    };
    let mut messages = rest.split(|&b| b == 0xFF);
    let initial = messages.next().unwrap_or_default();
    let store = lookup;
    let (mut exchange, mut step) = ServerExchange::start(mechanism, initial, &connection, &store);
    // The SCRAM client-first message: the initial response, or the response to the empty
    // challenge that answers an empty initial response.
    let mut first: Option<Vec<u8>> = (!initial.is_empty()).then(|| initial.to_vec());
    let mut server_first: Option<String> = None;
    let mut last_sent = initial.to_vec();
    while let Step::Challenge(challenge) = &step {
        let Some(message) = messages.next() else {
            break;
        };
        if !challenge.is_empty() {
            server_first = Some(String::from_utf8(challenge.clone()).expect("UTF-8 challenge"));
        }
        let parsed_first = first.as_deref().and_then(scram_first);
        let message = fill_in(
            message,
            mechanism,
            parsed_first.as_ref(),
            server_first.as_deref(),
        );
        if first.is_none() {
            first = Some(message.clone());
        }
        step = exchange.step(&message, &store);
        last_sent = message;
    }
    if trace() {
        eprintln!("{mechanism} (connection {}): {step:?}", config / 5 % 3);
    }
    if let Step::Success {
        username,
        additional_data,
    } = &step
    {
        assert!(
            exchange.password_tried(),
            "success without a password or proof"
        );
        check_success(
            mechanism,
            &connection,
            username,
            additional_data,
            first.as_deref(),
            server_first.as_deref(),
            &last_sent,
        );
    }
    if !matches!(step, Step::Challenge(_)) {
        // Finished is finished: anything more is refused.
        let again = exchange.step(messages.next().unwrap_or(b"n,,n=user,r=x"), &store);
        assert_eq!(again, Step::Failure(Failure::MalformedRequest));
    }
});

/// With `SASL_FUZZ_TRACE` set, every run prints its last step (to see which inputs log in).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SASL_FUZZ_TRACE").is_some())
}

/// Replaces the placeholders of a SCRAM client-final message.
fn fill_in(
    message: &[u8],
    mechanism: Mechanism,
    first: Option<&First>,
    server_first: Option<&str>,
) -> Vec<u8> {
    let (Some(hash), Some(first), Some(server_first), Ok(text)) = (
        mechanism.hash(),
        first,
        server_first,
        std::str::from_utf8(message),
    ) else {
        return message.to_vec();
    };
    let mut text = text.to_string();
    if let Some(nonce) = attr(server_first, 'r') {
        text = text.replace("{r}", nonce);
    }
    let mut cbind = first.gs2_header.as_bytes().to_vec();
    if mechanism.is_plus() {
        cbind.extend_from_slice(&EXPORTER);
    }
    text = text.replace("{c}", &BASE64.encode(&cbind));
    if let Some(without_proof) = text.strip_suffix(",p={p}") {
        let username = attr(&first.bare, 'n')
            .map(decode_saslname)
            .unwrap_or_default();
        let proof = match accounts().get(&(username, hash)) {
            Some(account) => {
                let auth_message = format!("{},{server_first},{without_proof}", first.bare);
                let signature = hmac(hash, &account.keys.stored_key, auth_message.as_bytes());
                account
                    .client_key
                    .iter()
                    .zip(&signature)
                    .map(|(k, s)| k ^ s)
                    .collect()
            }
            None => vec![0; hash.output_len()],
        };
        text = format!("{without_proof},p={}", BASE64.encode(proof));
    }
    text.into_bytes()
}

/// The independent check of a successful exchange.
fn check_success(
    mechanism: Mechanism,
    connection: &ConnectionInfo<'_>,
    username: &str,
    additional_data: &[u8],
    first: Option<&[u8]>,
    server_first: Option<&str>,
    last: &[u8],
) {
    assert!(
        mechanism != Mechanism::Plain || connection.tls_active,
        "PLAIN without TLS"
    );
    assert!(
        !mechanism.is_plus() || connection.tls_exporter.is_some(),
        "-PLUS without channel binding"
    );
    let Some(hash) = mechanism.hash() else {
        // PLAIN: authzid NUL authcid NUL password, with the account's password.
        let parts: Vec<&[u8]> = last.split(|&b| b == 0).collect();
        let [authzid, authcid, password] = parts.as_slice() else {
            panic!("PLAIN success for a malformed message {last:?}");
        };
        let authcid = std::str::from_utf8(authcid).unwrap();
        assert_eq!(authcid, username);
        assert!(authzid_is_self(
            std::str::from_utf8(authzid).unwrap(),
            username
        ));
        let (_, expected) = ACCOUNTS
            .iter()
            .find(|(user, _)| *user == username)
            .unwrap_or_else(|| panic!("PLAIN success for unknown user {username:?}"));
        let given = stringprep::saslprep(std::str::from_utf8(password).unwrap()).unwrap();
        assert_eq!(
            given,
            stringprep::saslprep(expected).unwrap(),
            "PLAIN success with a wrong password"
        );
        assert!(additional_data.is_empty());
        return;
    };
    let first = scram_first(first.expect("SCRAM success without a client-first message"))
        .expect("SCRAM success for a malformed client-first message");
    let server_first = server_first.expect("SCRAM success without a server-first message");
    let account = accounts()
        .get(&(username.to_string(), hash))
        .unwrap_or_else(|| panic!("SCRAM success for unknown user {username:?}"));
    assert_eq!(
        attr(&first.bare, 'n').map(decode_saslname).as_deref(),
        Some(username)
    );
    let authzid = first
        .gs2_header
        .split(',')
        .nth(1)
        .unwrap_or_default()
        .strip_prefix("a=")
        .map(decode_saslname)
        .unwrap_or_default();
    assert!(authzid_is_self(&authzid, username), "authzid {authzid:?}");
    let last = std::str::from_utf8(last).expect("UTF-8 client-final");
    let (without_proof, proof) = last.rsplit_once(",p=").expect("a proof");
    assert_eq!(attr(without_proof, 'r'), attr(server_first, 'r'), "nonce");
    let mut cbind = first.gs2_header.as_bytes().to_vec();
    if mechanism.is_plus() {
        cbind.extend_from_slice(&EXPORTER);
    }
    assert_eq!(
        attr(without_proof, 'c').map(|c| BASE64.decode(c).unwrap()),
        Some(cbind),
        "channel binding"
    );
    let auth_message = format!("{},{server_first},{without_proof}", first.bare);
    let signature = hmac(hash, &account.keys.stored_key, auth_message.as_bytes());
    let expected: Vec<u8> = account
        .client_key
        .iter()
        .zip(&signature)
        .map(|(k, s)| k ^ s)
        .collect();
    assert_eq!(BASE64.decode(proof).unwrap(), expected, "proof");
    let server_signature = hmac(hash, &account.keys.server_key, auth_message.as_bytes());
    assert_eq!(
        additional_data,
        format!("v={}", BASE64.encode(server_signature)).as_bytes(),
        "server signature"
    );
}
