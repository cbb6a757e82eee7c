//! Who reads a node and what readers get: items retrieval (XEP-0060 §6.5) with the access
//! models (§6.5.9, XEP-0222, XEP-0223), notifications (§7.1.2.1, XEP-0163 §4.3), and the nodes
//! and items listed by disco (§5.2, §5.5).

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::message::{Id, Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::config::name;
use super::{node_of, owner_name, parse_payload, PubsubError};
use crate::server::hub::{Delivery, Hub};
use crate::server::store::{AccessModel, PepItem, PepNodeConfig, Subscription};

/// The most payload bytes one items answer carries, beyond its newest item (which is always
/// sent): a reader asking for a node its owner filled up to the account quota gets the newest
/// items that fit and a result set saying how many there are (XEP-0060 §6.5.4), instead of one
/// stanza of many megabytes that would sit in its queue and that no client accepts.
const ITEMS_ANSWER_BYTES: usize = 256 * 1024;

/// The newest of `items` (oldest first) whose payloads fit in `budget` bytes together, oldest
/// first; the newest one always.
fn newest_within(mut items: Vec<PepItem>, budget: usize) -> Vec<PepItem> {
    let mut used = 0usize;
    let mut keep = 0;
    for item in items.iter().rev() {
        used = used.saturating_add(item.payload.len());
        if keep > 0 && used > budget {
            break;
        }
        keep += 1;
    }
    items.split_off(items.len() - keep)
}

impl Hub {
    /// XEP-0060 §6.5: items for `reader`, by id, the newest `max_items`, or all; oldest first.
    pub(super) fn pep_items(
        &self,
        owner: &BareJid,
        reader: &BareJid,
        items: &Element,
    ) -> Result<Element, PubsubError> {
        let node = node_of(items)?;
        let user = owner_name(owner)?;
        let config = self
            .store
            .pep_node(&user, node)
            .map_err(|_| PubsubError::internal())?
            .ok_or_else(PubsubError::not_found)?;
        self.pep_may_read(owner, &config, reader)?;
        let ids: Vec<String> = items
            .children()
            .filter(|c| c.is("item", ns::PUBSUB))
            .filter_map(|item| item.attr("id").map(str::to_string))
            .collect();
        let found = if ids.is_empty() {
            let max = match items.attr("max_items") {
                None => None,
                Some(max) => Some(
                    max.parse::<usize>()
                        .map_err(|_| PubsubError::plain(DefinedCondition::BadRequest))?,
                ),
            };
            self.store.pep_items(&user, node, max)
        } else {
            self.store.pep_items_by_id(&user, node, &ids)
        }
        .map_err(|_| PubsubError::internal())?;
        let total = found.len();
        let found = newest_within(found, ITEMS_ANSWER_BYTES);
        let mut answer = Element::builder("items", ns::PUBSUB).attr(name("node"), node);
        // XEP-0060 §6.5.4: a truncated list says so with a result set (XEP-0059).
        let truncated = (found.len() < total).then(|| {
            let mut set = Element::builder("set", ns::RSM);
            if let (Some(first), Some(last)) = (found.first(), found.last()) {
                set = set
                    .append(Element::builder("first", ns::RSM).append(first.id.as_str()))
                    .append(Element::builder("last", ns::RSM).append(last.id.as_str()));
            }
            set.append(Element::builder("count", ns::RSM).append(total.to_string()))
                .build()
        });
        for item in found {
            if let Some(payload) = parse_payload(&item) {
                answer = answer.append(
                    Element::builder("item", ns::PUBSUB)
                        .attr(name("id"), item.id.as_str())
                        .append(payload),
                );
            }
        }
        Ok(Element::builder("pubsub", ns::PUBSUB)
            .append(answer)
            .append_all(truncated)
            .build())
    }

    /// Whether `reader` may read `owner`'s node configured with `config` (XEP-0060 §6.5.9).
    /// Across a block list (XEP-0191 §3.5, §3.6: either account blocks the other), nothing is
    /// readable and nothing is notified, whatever the access model; the reader's requests
    /// never get here (rule 1a of `router.rs`), but notifications and last items do.
    pub(super) fn pep_may_read(
        &self,
        owner: &BareJid,
        config: &PepNodeConfig,
        reader: &BareJid,
    ) -> Result<(), PubsubError> {
        if reader == owner {
            return Ok(());
        }
        if self.presence_cut(&owner.clone().into(), &reader.clone().into()) {
            return Err(PubsubError::new(
                DefinedCondition::NotAllowed,
                Some("closed-node"),
            ));
        }
        match config.access_model {
            AccessModel::Open => Ok(()),
            AccessModel::Presence => {
                let item = self.roster_entry(owner, reader);
                if matches!(item.subscription, Subscription::From | Subscription::Both) {
                    Ok(())
                } else {
                    Err(PubsubError::new(
                        DefinedCondition::NotAuthorized,
                        Some("presence-subscription-required"),
                    ))
                }
            }
            AccessModel::Whitelist => Err(PubsubError::new(
                DefinedCondition::NotAllowed,
                Some("closed-node"),
            )),
        }
    }

    /// Sends the event `event` about `owner`'s `node` to every session that may read the node
    /// and wants it (see the module docs).
    pub(super) fn pep_notify(
        &self,
        owner: &BareJid,
        node: &str,
        config: &PepNodeConfig,
        event: &Element,
        out: &mut Vec<Delivery>,
    ) {
        let mut readers = vec![owner.clone()];
        if config.access_model != AccessModel::Whitelist {
            readers.extend(
                self.contacts_where(owner, |item| {
                    matches!(item.subscription, Subscription::From | Subscription::Both)
                })
                .into_iter()
                .filter(|contact| self.pep_may_read(owner, config, contact).is_ok()),
            );
        }
        for reader in readers {
            for (session, _) in self.available_of(&reader) {
                let wants = self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.pep.wants(node));
                if wants {
                    out.push(notification(owner, &session, event.clone()));
                }
            }
        }
    }

    /// The node `node` of `account` if `asker` may read it.
    pub(super) fn pep_readable_node(
        &self,
        account: &BareJid,
        asker: &BareJid,
        node: &str,
    ) -> Option<PepNodeConfig> {
        let user = account.node()?;
        let config = self.store.pep_node(user.as_str(), node).ok()??;
        self.pep_may_read(account, &config, asker).ok()?;
        Some(config)
    }

    /// XEP-0060 §5.2, §5.5: the nodes of `account` that `asker` may read, or the item ids of
    /// one of them.
    pub(super) fn pep_disco_items(
        &self,
        account: &BareJid,
        asker: &BareJid,
        node: Option<&str>,
    ) -> Vec<tokio_xmpp::parsers::disco::Item> {
        let Some(user) = account.node() else {
            return Vec::new();
        };
        let jid: Jid = account.clone().into();
        match node {
            None => self
                .store
                .pep_nodes(user.as_str())
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, config)| self.pep_may_read(account, config, asker).is_ok())
                .map(|(node, config)| tokio_xmpp::parsers::disco::Item {
                    jid: jid.clone(),
                    node: Some(node),
                    name: config.title,
                })
                .collect(),
            Some(node) => {
                if self.pep_readable_node(account, asker, node).is_none() {
                    return Vec::new();
                }
                self.store
                    .pep_items(user.as_str(), node, None)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|item| tokio_xmpp::parsers::disco::Item {
                        jid: jid.clone(),
                        node: None,
                        name: Some(item.id),
                    })
                    .collect()
            }
        }
    }
}

/// The `<items node=…><item id=…>payload</item></items>` of a notification (XEP-0060 §7.1.2.1),
/// the payload left out if the node does not deliver payloads.
pub(super) fn items_event(node: &str, item: &PepItem, with_payload: bool) -> Option<Element> {
    let mut entry = Element::builder("item", ns::PUBSUB_EVENT).attr(name("id"), item.id.as_str());
    if with_payload {
        entry = entry.append(parse_payload(item)?);
    }
    Some(
        Element::builder("items", ns::PUBSUB_EVENT)
            .attr(name("node"), node)
            .append(entry)
            .build(),
    )
}

/// A notification (XEP-0060 §7.1.2.1, XEP-0163 §4.3): a headline from the owner's bare JID.
pub(super) fn notification(owner: &BareJid, to: &FullJid, event: Element) -> Delivery {
    let mut message = Message::new_with_type(MessageType::Headline, Some(to.clone().into()));
    message.from = Some(owner.clone().into());
    message.id = Some(Id(format!("pep-{:016x}", rand::random::<u64>())));
    message.payloads.push(
        Element::builder("event", ns::PUBSUB_EVENT)
            .append(event)
            .build(),
    );
    Delivery::stanza(to.clone(), message)
}
