//! The component handshake (XEP-0114 §3), sans-IO: which component a stream header asks for,
//! and whether the `<handshake>` it sends proves it knows the secret.
//!
//! The component sends `hex(SHA-1(stream id + secret))`; the server computes the same and
//! compares in constant time (`subtle`), so the time an answer takes says nothing about how many
//! leading bytes of a guess were right. The hex digits may be upper or lower case (XEP-0114
//! says lowercase; Prosody accepts either, and so does this).

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::parsers::stream_error::DefinedCondition as StreamCondition;

use crate::secret::Secret;

/// One external component the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    /// The domain it serves (`gateway.example.org`).
    pub domain: BareJid,
    /// The shared secret.
    pub secret: Secret,
}

/// Why a stream header is refused before any handshake, with the stream error for it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Refusal {
    /// The stream error condition.
    pub condition: StreamCondition,
    /// The text sent with it.
    pub text: String,
}

/// The component a stream header's `to` asks for: `improper-addressing` without one (as Prosody
/// answers), `host-unknown` for a domain no `--component` names.
pub(super) fn lookup<'a>(
    components: &'a [ComponentSpec],
    to: Option<&str>,
) -> Result<&'a ComponentSpec, Refusal> {
    let Some(to) = to else {
        return Err(Refusal {
            condition: StreamCondition::ImproperAddressing,
            text: "a component's stream header needs a 'to' naming its domain".into(),
        });
    };
    let unknown = || Refusal {
        condition: StreamCondition::HostUnknown,
        text: format!("{to} is not an external component of this server"),
    };
    // Parsing normalises the domain (case, IDNA), as the configuration's were.
    let domain = BareJid::new(to).map_err(|_| unknown())?;
    components
        .iter()
        .find(|spec| spec.domain == domain)
        .ok_or_else(unknown)
}

/// SHA-1 of the stream id followed by the secret (XEP-0114 §3).
fn digest(stream_id: &str, secret: &Secret) -> [u8; 20] {
    let mut hash = Sha1::new();
    hash.update(stream_id.as_bytes());
    hash.update(secret.expose().as_bytes());
    hash.finalize().into()
}

/// Whether `handshake`, the text of the component's `<handshake>`, is the hex SHA-1 of
/// `stream_id` and `secret`. Anything that is not 40 hex digits (surrounding whitespace aside)
/// is wrong.
pub(super) fn verify(stream_id: &str, secret: &Secret, handshake: &str) -> bool {
    let Some(given) = decode_hex(handshake.trim()) else {
        return false;
    };
    digest(stream_id, secret).ct_eq(&given).into()
}

/// 40 hex digits as 20 bytes.
fn decode_hex(text: &str) -> Option<[u8; 20]> {
    let bytes = text.as_bytes();
    if bytes.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        out[i] = (high * 16 + low) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(domain: &str, secret: &str) -> ComponentSpec {
        ComponentSpec {
            domain: BareJid::new(domain).unwrap(),
            secret: Secret::new(secret),
        }
    }

    /// What a component computes, as xmpp-parsers (the client side of XEP-0114) computes it.
    fn component_side(stream_id: &str, secret: &str) -> String {
        let handshake = tokio_xmpp::parsers::component::Handshake::from_stream_id_and_password(
            stream_id.into(),
            secret,
        );
        handshake
            .data
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn the_handshake_is_the_hex_sha1_of_the_stream_id_and_the_secret() {
        // sha1("3BF96D32" + "secret"), computed independently: printf %s 3BF96D32secret | sha1sum
        let expected = "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136";
        let secret = Secret::new("secret");
        assert_eq!(component_side("3BF96D32", "secret"), expected);
        assert!(verify("3BF96D32", &secret, expected));
        assert!(verify("3BF96D32", &secret, &expected.to_uppercase()));
        assert!(verify("3BF96D32", &secret, &format!("\n {expected} \n")));
    }

    #[test]
    fn a_wrong_secret_a_wrong_stream_id_or_a_malformed_token_is_refused() {
        let secret = Secret::new("secret");
        let right = component_side("abc", "secret");
        assert!(verify("abc", &secret, &right));
        assert!(!verify("abc", &secret, &component_side("abc", "guess")));
        assert!(!verify("abd", &secret, &right));
        for malformed in [
            "",
            &right[..39],
            &format!("{right}0"),
            &format!("{}zz", &right[..38]),
            "secret",
        ] {
            assert!(!verify("abc", &secret, malformed), "{malformed:?}");
        }
        // A token whose first 39 digits are right is just as wrong as any other.
        let mut almost = right.clone().into_bytes();
        almost[39] = if almost[39] == b'0' { b'1' } else { b'0' };
        assert!(!verify(
            "abc",
            &secret,
            std::str::from_utf8(&almost).unwrap()
        ));
    }

    #[test]
    fn the_header_names_a_configured_component_or_is_refused_with_the_condition_prosody_uses() {
        let components = [spec("gateway.localhost", "a"), spec("rooms.localhost", "b")];
        let found = lookup(&components, Some("rooms.localhost")).unwrap();
        assert_eq!(found.secret.expose(), "b");
        // Domains compare as JIDs do: case does not matter.
        let found = lookup(&components, Some("Gateway.LOCALHOST")).unwrap();
        assert_eq!(found.secret.expose(), "a");
        for to in [
            "other.localhost",
            "localhost",
            "user@gateway.localhost",
            "not a jid",
        ] {
            let refusal = lookup(&components, Some(to)).unwrap_err();
            assert_eq!(refusal.condition, StreamCondition::HostUnknown, "{to}");
        }
        let refusal = lookup(&components, None).unwrap_err();
        assert_eq!(refusal.condition, StreamCondition::ImproperAddressing);
    }
}
