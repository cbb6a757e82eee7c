//! XEP-0030 service discovery: what the server and its accounts say they are and support, and
//! the server's entity capabilities (XEP-0115), which are a digest of the same answer.
//!
//! The features are not listed here: each service the hub runs (`registry.rs`) names its
//! own, so what disco#info advertises is what is plugged in.
//!
//! - **The server** (its domain JID) is `server/im` and lists the server features of every
//!   service. Its disco#items are the external components (XEP-0114).
//! - **An account** (a bare JID of this domain) is answered by the server on the account's
//!   behalf (RFC 6121 §8.5.2, as Prosody's mod_disco does): `account/registered` and the
//!   account features of the services, the same for the account itself and for the other
//!   accounts that ask, plus the identities services add (PEP's `pubsub/pep`); its
//!   disco#items are what the services list for the asker (PEP: the nodes it may read, and a
//!   node's items), and its nodes are those a service knows (a PEP node: `pubsub/leaf`).
//! - **Nodes**: the server's caps node `NODE#VER` (XEP-0115 §6.2) is answered like the server
//!   itself, and its ad-hoc command list `http://jabber.org/protocol/commands` (XEP-0050 §2.2)
//!   as `automation/command-list` (with no items: the server has no commands of its own); any
//!   other node gets `item-not-found` (XEP-0030 §3.2). disco#items echo the node asked for.
//! - **Entity capabilities** (XEP-0115 §6.3): the stream features after authentication carry
//!   `<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='NODE' ver='VER'/>`, where
//!   `VER` is the §5.1 hash of the server's disco#info, computed by the function that builds
//!   that answer ([`server_disco_info`]), so the two cannot drift apart. The verification
//!   string is built in `crate::caps` ([`verification_string`], also used by PEP to check
//!   the caps of clients, and by the bot for its own caps), not by xmpp-parsers, whose sort
//!   breaks on a feature that prefixes another (`urn:xmpp:mam:2` and
//!   `urn:xmpp:mam:2#extended`). The identity's name is fixed (not the
//!   domain) and the features are the services' constant lists: the same services give the
//!   same `ver` on every start and on every server, so a client caches it once. The server lists the caps feature itself (XEP-0115 §7).

use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::caps::Caps;
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use tokio_xmpp::parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::service::{features_of, Entity, IqRequest, Service, Target};
use super::{Delivery, Hub};

/// The caps `node` of the server (XEP-0115 §4: a URI that identifies the software).
pub(crate) const CAPS_NODE: &str = crate::caps::CAPS_NODE;

/// The name in the server's identity: the software's, the same on every domain.
const SERVER_NAME: &str = env!("CARGO_PKG_NAME");

/// disco#info and disco#items of the server (XEP-0030 §3.1, §4.1) and of accounts' bare JIDs,
/// and the server's entity capabilities (XEP-0115).
pub(super) struct Disco;

impl Service for Disco {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[ns::DISCO_INFO, ns::DISCO_ITEMS, ns::CAPS],
            Entity::Account => &[ns::DISCO_INFO, ns::DISCO_ITEMS],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.is_get("query", ns::DISCO_INFO) || request.is_get("query", ns::DISCO_ITEMS)
    }

    fn stream_feature(&self, services: &[&dyn Service]) -> Option<Element> {
        Some(caps(&server_disco_info(features_of(services, Entity::Server)))?.into())
    }

    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        let query = &request.payload;
        let info = query.is("query", ns::DISCO_INFO);
        let answer = match request.at {
            Target::Server if info => {
                server_info(query, hub.features(Entity::Server), &hub.contacts)
            }
            Target::Server => Ok(server_items(
                query,
                hub.component_domains()
                    .chain(hub.muc_service())
                    .chain(hub.upload_service()),
            )),
            Target::OwnAccount | Target::OtherAccount => {
                let Some(account) = request.account() else {
                    return request.answer(Err(DefinedCondition::ServiceUnavailable), out);
                };
                let asker = request.from.to_bare();
                if info {
                    account_info(hub, query, &account, &asker)
                } else {
                    Ok(account_items(hub, query, &account, &asker))
                }
            }
        };
        request.answer(answer.map(Some), out);
    }
}

/// The node asked for; an empty `node` is no node.
fn node_of(query: &Element) -> Option<String> {
    query
        .attr("node")
        .filter(|node| !node.is_empty())
        .map(str::to_string)
}

/// The server's disco#info (no node): `server/im` and `features`.
pub(super) fn server_disco_info<'a>(features: impl Iterator<Item = &'a str>) -> DiscoInfoResult {
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("server", "im", "en", SERVER_NAME)],
        features: features.map(str::to_string).collect(),
        extensions: Vec::new(),
    }
}

/// `info` (the server's disco#info) with its contact addresses (XEP-0157 §3): a form of
/// `FORM_TYPE` `http://jabber.org/network/serverinfo`, one list field per kind of address
/// (`admin-addresses`, `abuse-addresses` … §4), none when no address is configured. The
/// server's caps hash the same answer (XEP-0115 §5.1 covers forms), [`server_caps`].
fn with_contacts(mut info: DiscoInfoResult, contacts: &[(String, Vec<String>)]) -> DiscoInfoResult {
    if contacts.is_empty() {
        return info;
    }
    let fields = contacts
        .iter()
        .map(|(kind, uris)| {
            let mut field = Field::new(&format!("{kind}-addresses"), FieldType::ListMulti);
            field.values = uris.clone();
            field
        })
        .collect();
    info.extensions.push(DataForm::new(
        DataFormType::Result_,
        ns::SERVER_INFO,
        fields,
    ));
    info
}

/// The server's entity capabilities with its contact addresses, for a server that has some
/// (the stream features of a server without any are built once, from the services alone).
pub(crate) fn server_caps(
    services: &[&dyn Service],
    contacts: &[(String, Vec<String>)],
) -> Option<Element> {
    let info = with_contacts(
        server_disco_info(features_of(services, Entity::Server)),
        contacts,
    );
    Some(caps(&info)?.into())
}

/// The entity capabilities of `info` (XEP-0115 §5.1, with SHA-1, the hash every client
/// implements, XEP-0115 §9.1), under [`CAPS_NODE`].
pub(super) fn caps(info: &DiscoInfoResult) -> Option<Caps> {
    crate::caps::caps_of(info, CAPS_NODE)
}

/// The verification string lives in the crate's shared caps module (the bot computes its own
/// caps with it too); PEP and the tests reach it through here.
pub(super) use crate::caps::verification_string;

/// The caps node of `info`, `NODE#VER`, under which a client asks for it (XEP-0115 §6.2).
fn caps_node(info: &DiscoInfoResult) -> Option<String> {
    let caps = caps(info)?;
    tokio_xmpp::parsers::caps::query_caps(caps).node
}

/// disco#info of the server: for no node, or for its caps node (echoed); any other node gets
/// `item-not-found`.
fn server_info<'a>(
    query: &Element,
    features: impl Iterator<Item = &'a str>,
    contacts: &[(String, Vec<String>)],
) -> Result<Element, DefinedCondition> {
    let mut info = with_contacts(server_disco_info(features), contacts);
    if let Some(node) = node_of(query) {
        if node == super::commands::NS && info.features.iter().any(|f| f == &node) {
            return Ok(command_list_info().into());
        }
        if caps_node(&info).as_ref() != Some(&node) {
            return Err(DefinedCondition::ItemNotFound);
        }
        info.node = Some(node);
    }
    Ok(info.into())
}

/// disco#info of the server's ad-hoc command list node (XEP-0050 §2.2: identity
/// `automation/command-list`, which the XEP's registry entry makes valid only for this
/// node); its items, the commands, are none (`server_items`).
fn command_list_info() -> DiscoInfoResult {
    DiscoInfoResult {
        node: Some(super::commands::NS.to_string()),
        identities: vec![Identity::new_anonymous::<_, _, String, String>(
            "automation",
            "command-list",
        )],
        features: [ns::DISCO_INFO.to_string(), ns::DISCO_ITEMS.to_string()].into(),
        extensions: Vec::new(),
    }
}

/// disco#items of the server (XEP-0030 §4.1): the external components' domains (XEP-0114),
/// connected or not, as Prosody lists its components, and the room service (XEP-0045 §6.1). A node has no items.
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

/// disco#info of an account's bare JID (XEP-0030 §3.1 "account/registered", and the
/// identities the services add: PEP's `pubsub/pep`); of one of its nodes a service knows
/// for `asker` (a PEP node, XEP-0060 §5.3: `pubsub/leaf`); any other node is `item-not-found`.
fn account_info(
    hub: &Hub,
    query: &Element,
    account: &BareJid,
    asker: &BareJid,
) -> Result<Element, DefinedCondition> {
    if let Some(node) = node_of(query) {
        let services = hub.services;
        if !services
            .iter()
            .any(|s| s.account_node_exists(hub, account, asker, &node))
        {
            return Err(DefinedCondition::ItemNotFound);
        }
        return Ok(DiscoInfoResult {
            node: Some(node),
            identities: vec![Identity::new_anonymous::<_, _, String, String>(
                "pubsub", "leaf",
            )],
            features: [ns::DISCO_INFO.to_string(), ns::DISCO_ITEMS.to_string()].into(),
            extensions: Vec::new(),
        }
        .into());
    }
    let mut identities = vec![Identity::new_anonymous::<_, _, String, String>(
        "account",
        "registered",
    )];
    for service in hub.services {
        for (category, type_) in service.identities(Entity::Account) {
            identities.push(Identity::new_anonymous::<_, _, String, String>(
                *category, *type_,
            ));
        }
    }
    Ok(DiscoInfoResult {
        node: None,
        identities,
        features: hub.features(Entity::Account).map(str::to_string).collect(),
        extensions: Vec::new(),
    }
    .into())
}

/// disco#items of an account's bare JID for `asker` (XEP-0030 §4.1): what the services list
/// (PEP's nodes it may read, or a node's items), echoing the node asked for.
fn account_items(hub: &Hub, query: &Element, account: &BareJid, asker: &BareJid) -> Element {
    let node = node_of(query);
    DiscoItemsResult {
        items: hub
            .services
            .iter()
            .flat_map(|s| s.account_items(hub, account, asker, node.as_deref()))
            .collect(),
        node,
        rsm: None,
    }
    .into()
}

#[cfg(test)]
mod tests;
