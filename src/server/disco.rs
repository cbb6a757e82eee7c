//! XEP-0030 service discovery: what the server and its accounts say they are and support.

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

/// Features of the server's domain JID.
pub const SERVER_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::PING,
    ns::VERSION,
    ns::CARBONS,
    ns::PRIVATE,
    ns::ROSTER,
    "msgoffline",
];

/// Features of an account's bare JID.
pub const ACCOUNT_FEATURES: &[&str] = &[ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING];

fn node_of(query: &Element) -> Option<String> {
    query.attr("node").map(str::to_string)
}

/// disco#info of the server (no node support: a node gets `item-not-found`).
pub fn server_info(query: &Element) -> Result<Element, DefinedCondition> {
    if node_of(query).is_some() {
        return Err(DefinedCondition::ItemNotFound);
    }
    Ok(DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("server", "im", "en", "mqtt2xmpp")],
        features: SERVER_FEATURES.iter().map(|f| f.to_string()).collect(),
        extensions: Vec::new(),
    }
    .into())
}

/// disco#items of the server: no components or services.
pub fn server_items(query: &Element) -> Element {
    empty_items(query)
}

/// An empty disco#items result (echoing the node asked for).
pub fn empty_items(query: &Element) -> Element {
    DiscoItemsResult {
        node: node_of(query),
        rsm: None,
        items: Vec::new(),
    }
    .into()
}

/// disco#info of an account's bare JID (XEP-0030 §3.1 "account/registered").
pub fn account_info(query: &Element) -> Element {
    DiscoInfoResult {
        node: node_of(query),
        identities: vec![Identity::new_anonymous::<_, _, String, String>(
            "account",
            "registered",
        )],
        features: ACCOUNT_FEATURES.iter().map(|f| f.to_string()).collect(),
        extensions: Vec::new(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info_lists_its_features() {
        let query = Element::builder("query", ns::DISCO_INFO).build();
        let info = DiscoInfoResult::try_from(server_info(&query).unwrap()).unwrap();
        assert!(info.features.contains(ns::PING));
        assert!(info.features.contains(ns::CARBONS));
        assert_eq!(info.identities[0].category, "server");
        let with_node = Element::builder("query", ns::DISCO_INFO)
            .attr(tokio_xmpp::minidom::rxml::xml_ncname!("node").into(), "x")
            .build();
        assert_eq!(server_info(&with_node), Err(DefinedCondition::ItemNotFound));
    }
}
