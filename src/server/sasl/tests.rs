//! Tests of the SASL server: the RFC example exchanges byte for byte, round trips with the
//! `sasl` crate's client (what tokio-xmpp sends), channel binding, authorization identities,
//! PLAIN, the exchange's mechanics and hostile input.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::keys::SALT_LEN;
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
        tls_server_end_point: None,
    }
}

fn tls_only() -> ConnectionInfo<'static> {
    ConnectionInfo {
        domain: DOMAIN,
        tls_active: true,
        tls_exporter: None,
        tls_server_end_point: None,
    }
}

fn plaintext() -> ConnectionInfo<'static> {
    ConnectionInfo {
        domain: DOMAIN,
        tls_active: false,
        tls_exporter: None,
        tls_server_end_point: None,
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
            let client = sasl_client(mechanism, user, password, binding_for(mechanism, &EXPORTER));
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
        let mut client = sasl_client(mechanism, "mallory", "x", binding_for(mechanism, &EXPORTER));
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

/// The `tls-server-end-point` data of a freshly made certificate, computed as RFC 5929 §4.1
/// says (SHA-256 of the DER for an ECDSA-SHA256 signature).
fn end_point_data() -> Vec<u8> {
    use sha2::Digest as _;
    let generated = rcgen::generate_simple_self_signed(vec![DOMAIN.to_string()]).unwrap();
    let der = generated.cert.der();
    let data = crate::tls::tls_server_end_point(der).expect("defined for ECDSA-SHA256");
    assert_eq!(data, sha2::Sha256::digest(der).to_vec());
    data
}

fn with_end_point(end_point: &[u8]) -> ConnectionInfo<'_> {
    ConnectionInfo {
        tls_server_end_point: Some(end_point),
        ..tls_plus()
    }
}

#[test]
fn plus_with_tls_server_end_point_binds_to_the_certificate_hash() {
    let end_point = end_point_data();
    for mechanism in [Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus] {
        let step = scram_with(
            mechanism,
            &with_end_point(&end_point),
            "p=tls-server-end-point,,",
            "n=alice,r=abc",
            "correct horse",
            &end_point,
        );
        assert!(
            matches!(step, Step::Success { .. }),
            "{mechanism}: {step:?}"
        );
        // The exporter bytes under the end-point's name, or another certificate's hash: refused.
        for wrong in [&EXPORTER[..], &end_point_data()] {
            let step = scram_with(
                mechanism,
                &with_end_point(&end_point),
                "p=tls-server-end-point,,",
                "n=alice,r=abc",
                "correct horse",
                wrong,
            );
            assert_eq!(failure(&step), Failure::NotAuthorized, "{mechanism}");
        }
    }
    // tls-exporter still works next to it.
    let step = scram_with(
        Mechanism::ScramSha256Plus,
        &with_end_point(&end_point),
        "p=tls-exporter,,",
        "n=alice,r=abc",
        "correct horse",
        &EXPORTER,
    );
    assert!(matches!(step, Step::Success { .. }), "{step:?}");
}

#[test]
fn tls_server_end_point_alone_is_enough_to_offer_plus() {
    let end_point = end_point_data();
    let info = ConnectionInfo {
        tls_exporter: None,
        ..with_end_point(&end_point)
    };
    assert!(info
        .offered_mechanisms()
        .contains(&Mechanism::ScramSha256Plus));
    assert_eq!(info.channel_binding_types(), ["tls-server-end-point"]);
    let (_, step) = ServerExchange::start(
        Mechanism::ScramSha256Plus,
        b"p=tls-exporter,,n=alice,r=abc",
        &info,
        store(),
    );
    assert_eq!(failure(&step), Failure::MalformedRequest);
}

#[test]
fn channel_binding_types_list_what_plus_accepts() {
    let end_point = end_point_data();
    assert_eq!(
        with_end_point(&end_point).channel_binding_types(),
        ["tls-exporter", "tls-server-end-point"]
    );
    assert_eq!(tls_plus().channel_binding_types(), ["tls-exporter"]);
    assert!(tls_only().channel_binding_types().is_empty());
    let plain_text = ConnectionInfo {
        tls_active: false,
        ..with_end_point(&end_point)
    };
    assert!(plain_text.channel_binding_types().is_empty());
    assert!(!plain_text
        .offered_mechanisms()
        .contains(&Mechanism::ScramSha256Plus));
}

/// What slixmpp 1.8.3 does on TLS 1.3: `-PLUS` with `tls-unique` (undefined there, RFC 9266),
/// then the plain mechanism with `y`. Both stay refused: the first because we lack the type
/// (RFC 5802 §6), the second because we did offer -PLUS and anyone in the middle could have
/// sent the first request to switch the check off.
#[test]
fn y_after_an_unsupported_channel_binding_type_is_still_a_downgrade() {
    let end_point = end_point_data();
    let info = with_end_point(&end_point);
    let (_, step) = ServerExchange::start(
        Mechanism::ScramSha256Plus,
        b"p=tls-unique,,n=alice,r=abc",
        &info,
        store(),
    );
    assert_eq!(failure(&step), Failure::MalformedRequest);
    let (ex, step) =
        ServerExchange::start(Mechanism::ScramSha256, b"y,,n=alice,r=abc", &info, store());
    assert_eq!(failure(&step), Failure::NotAuthorized);
    assert!(ex.failure_detail().unwrap().contains("downgrade"));
    assert!(!ex.password_tried());
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
        let (_, step) = ServerExchange::start(*mechanism, message.as_bytes(), &tls_plus(), store());
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
            tls_server_end_point: None,
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
    let (_, step) = ServerExchange::start(Mechanism::Plain, b"\0old\0legacy", &tls_only(), store());
    assert!(matches!(step, Step::Success { ref username, .. } if username == "old"));
    let (_, step) = ServerExchange::start(Mechanism::Plain, b"\0old\0legacx", &tls_only(), store());
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
    let (mut ex, step) = ServerExchange::start(Mechanism::ScramSha1, b"x", &tls_only(), store());
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

// --- Names, offers ----------------------------------------------------------------

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
        (EncryptionRequired, "encryption-required"),
        (IncorrectEncoding, "incorrect-encoding"),
        (InvalidAuthzid, "invalid-authzid"),
        (InvalidMechanism, "invalid-mechanism"),
        (MalformedRequest, "malformed-request"),
        (NotAuthorized, "not-authorized"),
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
    let (_, step) = ServerExchange::start(Mechanism::Plain, b"\0carol\0pw", &tls_only(), &lookup);
    assert!(matches!(step, Step::Success { .. }));
}

#[test]
fn only_password_checks_count_as_guesses() {
    let store = store();
    let info = ConnectionInfo {
        domain: DOMAIN,
        tls_active: true,
        tls_exporter: Some(&EXPORTER),
        tls_server_end_point: None,
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
