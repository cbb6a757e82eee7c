//! The SCRAM message syntax (RFC 5802 §7): the GS2 header with its channel-binding flag and
//! authorization identity, client-first-message, `attr=value` lists and `saslname` escapes.
//! Parsing only; what the values mean is decided in [`super::scram`].

use super::{malformed, Reject};

/// The GS2 channel-binding flag of a SCRAM client-first message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CbindFlag<'a> {
    /// `n`: the client does not support channel binding.
    NotBound,
    /// `y`: the client supports it but thinks the server does not.
    ClientSupports,
    /// `p=name`: the client binds with this channel-binding type.
    Bound(&'a str),
}

/// A parsed SCRAM client-first message.
#[derive(Debug)]
pub(super) struct ClientFirst<'a> {
    pub(super) cbind: CbindFlag<'a>,
    pub(super) authzid: Option<String>,
    /// The GS2 header exactly as received, including its trailing comma.
    pub(super) gs2_header: &'a str,
    /// client-first-message-bare exactly as received.
    pub(super) bare: &'a str,
    pub(super) username: String,
    pub(super) client_nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    pub(super) fn parse(text: &'a str) -> Result<Self, Reject> {
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
pub(super) fn scram_text(message: &[u8]) -> Result<&str, Reject> {
    let text = std::str::from_utf8(message).map_err(|_| malformed("SCRAM message is not UTF-8"))?;
    if text.contains('\0') {
        return Err(malformed("SCRAM message contains NUL"));
    }
    Ok(text)
}

/// Splits `a=value,b=value,…`: every attribute a single ASCII letter, `=`, and a non-empty
/// value (RFC 5802 `attr-val`).
pub(super) fn split_attributes(text: &str) -> Result<Vec<(char, &str)>, Reject> {
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
pub(super) fn decode_saslname(name: &str) -> Result<String, Reject> {
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
