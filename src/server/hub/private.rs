//! XEP-0049 private XML storage: an account keeps small XML fragments on its server, one per
//! namespace (clients keep bookmarks and settings there). Only the account itself reads and
//! writes them.

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::service::{Entity, IqRequest, Service, Target};
use super::{node, Delivery, Hub};

/// Get and set of the sender's own private XML (XEP-0049 §3), advertised by the server.
pub(super) struct PrivateStorage;

impl Service for PrivateStorage {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[ns::PRIVATE],
            Entity::Account => &[],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.at == Target::OwnAccount
            && (request.is_get("query", ns::PRIVATE) || request.is_set("query", ns::PRIVATE))
    }

    fn is_account_data(&self, payload: &Element) -> bool {
        payload.is("query", ns::PRIVATE)
    }

    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        let user = node(&request.from);
        let answer = if request.is_get("query", ns::PRIVATE) {
            private_get(hub, &user, &request.payload).map(Some)
        } else {
            private_set(hub, &user, &request.payload).map(|()| None)
        };
        request.answer(answer, out);
    }
}

/// XEP-0049 get: the stored child for the requested namespace, or the empty child.
fn private_get(hub: &Hub, user: &str, query: &Element) -> Result<Element, DefinedCondition> {
    let child = single_child(query)?;
    let key = private_key(child);
    let stored = hub
        .store
        .get_private(user, &key)
        .map_err(|_| DefinedCondition::InternalServerError)?;
    let content = match stored {
        Some(xml) => xml
            .parse::<Element>()
            .map_err(|_| DefinedCondition::InternalServerError)?,
        None => Element::builder(child.name(), child.ns()).build(),
    };
    Ok(Element::builder("query", ns::PRIVATE)
        .append(content)
        .build())
}

/// XEP-0049 set: stores the child under its namespace. The `jabber:client`,
/// `jabber:server` and `jabber:iq:private` namespaces are refused (XEP-0049 §4).
fn private_set(hub: &mut Hub, user: &str, query: &Element) -> Result<(), DefinedCondition> {
    let child = single_child(query)?;
    if matches!(
        child.ns().as_str(),
        "jabber:client" | "jabber:server" | ns::PRIVATE
    ) {
        return Err(DefinedCondition::NotAcceptable);
    }
    let key = private_key(child);
    hub.store
        .set_private(user, &key, &String::from(child))
        .map_err(|_| DefinedCondition::InternalServerError)
}

/// The one child of the query: XEP-0049 stores one fragment per request.
fn single_child(query: &Element) -> Result<&Element, DefinedCondition> {
    let mut children = query.children();
    match (children.next(), children.next()) {
        (Some(child), None) => Ok(child),
        _ => Err(DefinedCondition::NotAcceptable),
    }
}

/// `{namespace}name`, the key private storage uses.
fn private_key(child: &Element) -> String {
    format!("{{{}}}{}", child.ns(), child.name())
}

#[cfg(test)]
mod tests;
