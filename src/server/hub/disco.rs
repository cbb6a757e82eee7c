//! XEP-0030 service discovery: what the server and its accounts say they are and support.
//!
//! The features are not listed here: each service the hub runs (`registry.rs`) names its
//! own, so what disco#info advertises is what is plugged in.

use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::service::{Entity, IqRequest, Service, Target};
use super::{Delivery, Hub};

/// disco#info and disco#items of the server (XEP-0030 §3.1, §4.1) and of accounts' bare JIDs.
/// Another account's items are not answered (`service-unavailable`).
pub(super) struct Disco;

impl Service for Disco {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server | Entity::Account => &[ns::DISCO_INFO, ns::DISCO_ITEMS],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.is_get("query", ns::DISCO_INFO)
            || (request.at != Target::OtherAccount && request.is_get("query", ns::DISCO_ITEMS))
    }

    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        let query = &request.payload;
        let answer = match request.at {
            Target::Server if query.is("query", ns::DISCO_INFO) => {
                server_info(query, hub.features(Entity::Server))
            }
            Target::Server => Ok(server_items(query, hub.component_domains())),
            _ if query.is("query", ns::DISCO_INFO) => {
                Ok(account_info(query, hub.features(Entity::Account)))
            }
            _ => Ok(empty_items(query)),
        };
        request.answer(answer.map(Some), out);
    }
}

fn node_of(query: &Element) -> Option<String> {
    query.attr("node").map(str::to_string)
}

/// disco#info of the server (no node support: a node gets `item-not-found`).
fn server_info<'a>(
    query: &Element,
    features: impl Iterator<Item = &'a str>,
) -> Result<Element, DefinedCondition> {
    if node_of(query).is_some() {
        return Err(DefinedCondition::ItemNotFound);
    }
    Ok(DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("server", "im", "en", "mqtt2xmpp")],
        features: features.map(str::to_string).collect(),
        extensions: Vec::new(),
    }
    .into())
}

/// disco#items of the server (XEP-0030 §4.1): the external components' domains (XEP-0114),
/// connected or not, as Prosody lists its components. A node has no items.
fn server_items<'a>(query: &Element, components: impl Iterator<Item = &'a BareJid>) -> Element {
    if node_of(query).is_some() {
        return empty_items(query);
    }
    DiscoItemsResult {
        node: None,
        rsm: None,
        items: components
            .map(|domain| Item {
                jid: domain.clone().into(),
                node: None,
                name: None,
            })
            .collect(),
    }
    .into()
}

/// An empty disco#items result (echoing the node asked for).
fn empty_items(query: &Element) -> Element {
    DiscoItemsResult {
        node: node_of(query),
        rsm: None,
        items: Vec::new(),
    }
    .into()
}

/// disco#info of an account's bare JID (XEP-0030 §3.1 "account/registered").
fn account_info<'a>(query: &Element, features: impl Iterator<Item = &'a str>) -> Element {
    DiscoInfoResult {
        node: node_of(query),
        identities: vec![Identity::new_anonymous::<_, _, String, String>(
            "account",
            "registered",
        )],
        features: features.map(str::to_string).collect(),
        extensions: Vec::new(),
    }
    .into()
}

#[cfg(test)]
mod tests;
