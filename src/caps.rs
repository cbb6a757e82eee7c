//! XEP-0115 entity capabilities, shared by the bundled server (its own caps, and checking the
//! caps of clients for PEP) and the bot (the caps in its presence): the verification string of
//! a disco#info answer (§5.1, with the checks of §5.4) and the `<c/>` element made from it.
//!
//! The verification string is computed here rather than by xmpp-parsers 0.23, whose
//! `compute_disco` sorts each feature with its `<` separator attached (see
//! [`verification_string`]).

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::caps::{hash_caps, Caps};
use tokio_xmpp::parsers::disco::DiscoInfoResult;
use tokio_xmpp::parsers::hashes::Algo;
use tokio_xmpp::parsers::ns;

/// The caps `node` of this software, the server's and the bot's (XEP-0115 §4: a URI that
/// identifies the software; the `ver` tells the two apart).
pub(crate) const CAPS_NODE: &str = concat!("https://crates.io/crates/", env!("CARGO_PKG_NAME"));

/// The entity capabilities of `info` (XEP-0115 §5.1, with SHA-1, the hash every client
/// implements, §9.1) under `node`, or `None` if `info` must not be cached (§5.4).
pub(crate) fn caps_of(info: &DiscoInfoResult, node: &str) -> Option<Caps> {
    let input = verification_string(&Element::from(info.clone()))?;
    let hash = hash_caps(&input, Algo::Sha_1).ok()?;
    Some(Caps::new(node, hash))
}

/// The caps node under which a client asks for `info`, `NODE#VER` (XEP-0115 §6.2).
pub(crate) fn caps_node_of(info: &DiscoInfoResult, node: &str) -> Option<String> {
    tokio_xmpp::parsers::caps::query_caps(caps_of(info, node)?).node
}

/// The data forms namespace (XEP-0004), of the forms in a disco#info (XEP-0128).
const DATA_FORMS: &str = "jabber:x:data";

/// The input of the verification string of a disco#info `query` (XEP-0115 §5.1), or `None` if
/// the answer must not be cached (§5.4: duplicate identities or features, a form without a
/// single `FORM_TYPE`, or two forms with the same one).
///
/// Written here rather than taken from xmpp-parsers 0.23, whose `compute_disco` sorts each
/// feature with its `<` separator attached: `X+notify<` then sorts before `X<`, while §5.1
/// sorts the features themselves (`X` before `X+notify`). Every PEP client lists both a
/// namespace and its `+notify`, so its correct hash would never match.
pub(crate) fn verification_string(query: &Element) -> Option<Vec<u8>> {
    let mut identities: Vec<String> = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|identity| {
            let lang = identity
                .attr_ns(tokio_xmpp::minidom::rxml::Namespace::xml(), "lang")
                .unwrap_or_default();
            format!(
                "{}/{}/{}/{}",
                identity.attr("category").unwrap_or_default(),
                identity.attr("type").unwrap_or_default(),
                lang,
                identity.attr("name").unwrap_or_default()
            )
        })
        .collect();
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|feature| feature.attr("var"))
        .collect();
    let mut forms: Vec<(String, Vec<u8>)> = Vec::new();
    for form in query.children().filter(|c| c.is("x", DATA_FORMS)) {
        let mut form_type = None;
        let mut fields: Vec<(&str, Vec<String>)> = Vec::new();
        for field in form.children().filter(|c| c.is("field", DATA_FORMS)) {
            let var = field.attr("var")?;
            let mut values: Vec<String> = field
                .children()
                .filter(|c| c.is("value", DATA_FORMS))
                .map(Element::text)
                .collect();
            if var == "FORM_TYPE" {
                if form_type.is_some() || values.len() != 1 {
                    return None;
                }
                form_type = values.pop();
            } else {
                values.sort();
                fields.push((var, values));
            }
        }
        let form_type = form_type?;
        fields.sort();
        let mut bytes = format!("{form_type}<").into_bytes();
        for (var, values) in fields {
            bytes.extend_from_slice(var.as_bytes());
            bytes.push(b'<');
            for value in values {
                bytes.extend_from_slice(value.as_bytes());
                bytes.push(b'<');
            }
        }
        forms.push((form_type, bytes));
    }
    identities.sort();
    features.sort_unstable();
    forms.sort();
    let identity_count = identities.len();
    identities.dedup();
    let feature_count = features.len();
    features.dedup();
    let form_count = forms.len();
    forms.dedup_by(|a, b| a.0 == b.0);
    if identities.len() != identity_count
        || features.len() != feature_count
        || forms.len() != form_count
    {
        return None;
    }
    let mut input = Vec::new();
    for identity in identities {
        input.extend_from_slice(identity.as_bytes());
        input.push(b'<');
    }
    for feature in features {
        input.extend_from_slice(feature.as_bytes());
        input.push(b'<');
    }
    for (_, form) in forms {
        input.extend_from_slice(&form);
    }
    Some(input)
}
