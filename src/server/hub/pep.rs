//! PEP, the personal eventing service (XEP-0163) of every account: XEP-0060 publish-subscribe
//! at the account's bare JID, which clients use for their nickname (XEP-0172), avatar
//! (XEP-0084), bookmarks (XEP-0402) and OMEMO device lists.
//!
//! | request (to the own bare JID, or none) | who | what |
//! |---|---|---|
//! | `publish` (+ `publish-options`) | owner | stores the item (id generated if none), creating the node on first use (XEP-0060 §7.1, §7.1.5) and notifies |
//! | `retract` | owner | removes an item, notified if the request's `notify` (or else `pubsub#notify_retract`) says so (§7.2) |
//! | `create` (+ `configure`) | owner | a node with a name (§8.1.2, §8.1.3); instant nodes are not offered |
//! | `items` | readers | all, the newest `max_items`, or by id, oldest first (§6.5); at most 256 KiB of payloads beyond the newest item, with a result set when truncated (§6.5.4) |
//! | owner `configure` get/set, `default` | owner | the node's configuration form (§8.2, §8.3) |
//! | owner `delete` | owner | the node and its items, notified if `pubsub#notify_delete` (§8.4) |
//!
//! **Who reads** (XEP-0060 §6.5.9 for the errors): the owner always; then by the node's access
//! model (XEP-0222, XEP-0223): `open`, anyone; `presence` (the default), contacts subscribed to
//! the owner's presence (`from`/`both` in the owner's roster), else `not-authorized` +
//! `presence-subscription-required`; `whitelist`, no one else, `not-allowed` + `closed-node`.
//! Only the owner publishes, configures and deletes (`forbidden`, §7.1.3.1). A node that does
//! not exist is `item-not-found`. Subscriptions of XEP-0060 §6.1 are not offered: PEP's
//! implicit ones (below) are what clients use.
//!
//! **Notifications** (XEP-0163 §4.3): a `<message type='headline'>` from the owner's bare JID
//! with `<event xmlns='http://jabber.org/protocol/pubsub#event'>`, to each available session of
//! the owner and of each contact subscribed to the owner's presence (not for `whitelist`
//! nodes), that may read the node and whose caps say it wants it (`NODE+notify`, see
//! `pep/caps.rs`, which also sends the last items when a session comes online).
//!
//! **Limits** ([`PepLimits`]): nodes per account (`policy-violation` + `max-nodes-exceeded`),
//! items per node (`max_items`, with `max` meaning the cap; the oldest go first), bytes per
//! item (`not-acceptable` + `payload-too-big`) and per account (`resource-constraint`).
//!
//! **For the services that publish on the owner's behalf** (the vCard avatar of XEP-0398):
//! [`Hub::pep_publish_internal`] publishes as the owner, with notifications;
//! [`Hub::after_pep_publish`] is called after every publication by a client; and
//! `Store::pep_last_item` reads a node's newest item.
//!
//! | file | what it does |
//! |---|---|
//! | `pep.rs` | the service, its errors, the dispatch of requests, publishing |
//! | `pep/owner.rs` | create, retract, configure, delete |
//! | `pep/read.rs` | items, the access models, notifications, disco#items |
//! | `pep/config.rs` | the configuration form and publish-options |
//! | `pep/caps.rs` | whom to notify: caps (XEP-0115), and the last items at login |

mod caps;
mod config;
mod owner;
mod read;

use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

pub(super) use self::config::name;
use self::config::{config_form, PublishOptions as Options, Refused, Unknown};
use super::service::{Entity, IqRequest, Kind, Service, Target};
use super::{stanza_error, Delivery, Hub};
use crate::server::limits::PepLimits;
use crate::server::store::{PepItem, PepNodeConfig};

pub use self::caps::SessionCaps;
pub use self::config::PublishOptions;

/// Longest node name and item id accepted, in bytes.
const MAX_NAME_BYTES: usize = 1024;

/// The PEP service's state in the hub: its limits, and the caps learnt from clients.
#[derive(Debug, Default)]
pub struct PepState {
    limits: PepLimits,
    caps: caps::CapsCache,
}

impl PepState {
    /// The state for these limits.
    pub fn new(limits: PepLimits) -> Self {
        Self {
            caps: caps::CapsCache::new(limits.max_cached_caps),
            limits,
        }
    }
}

/// A refusal with the error XEP-0060 names: a stanza error condition and, where the XEP gives
/// one, a pubsub-specific condition (`http://jabber.org/protocol/pubsub#errors`).
#[derive(Debug, Clone, PartialEq)]
pub struct PubsubError {
    /// The stanza error condition.
    pub condition: DefinedCondition,
    /// The pubsub-specific condition, if any (`precondition-not-met`, `payload-too-big` …).
    pub pubsub: Option<&'static str>,
}

impl PubsubError {
    fn new(condition: DefinedCondition, pubsub: Option<&'static str>) -> Self {
        Self { condition, pubsub }
    }

    fn plain(condition: DefinedCondition) -> Self {
        Self::new(condition, None)
    }

    fn internal() -> Self {
        Self::plain(DefinedCondition::InternalServerError)
    }

    fn not_found() -> Self {
        Self::plain(DefinedCondition::ItemNotFound)
    }

    fn forbidden() -> Self {
        Self::plain(DefinedCondition::Forbidden)
    }

    fn bad_request(pubsub: &'static str) -> Self {
        Self::new(DefinedCondition::BadRequest, Some(pubsub))
    }

    fn unsupported(feature: &'static str) -> Self {
        Self::new(DefinedCondition::FeatureNotImplemented, Some(feature))
    }
}

/// The features PEP adds to every account's disco#info (XEP-0163 §6.1; XEP-0060 §10).
const ACCOUNT_FEATURES: &[&str] = &[
    ns::PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

/// XEP-0163 PEP on every account (see the module docs).
pub(super) struct Pep;

impl Service for Pep {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[],
            Entity::Account => ACCOUNT_FEATURES,
        }
    }

    fn identities(&self, entity: Entity) -> &'static [(&'static str, &'static str)] {
        match entity {
            Entity::Server => &[],
            // XEP-0163 §6.1.
            Entity::Account => &[("pubsub", "pep")],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        matches!(request.at, Target::OwnAccount | Target::OtherAccount)
            && (request.payload.is("pubsub", ns::PUBSUB)
                || request.payload.is("pubsub", ns::PUBSUB_OWNER))
    }

    fn account_items(
        &self,
        hub: &Hub,
        account: &BareJid,
        asker: &BareJid,
        node: Option<&str>,
    ) -> Vec<tokio_xmpp::parsers::disco::Item> {
        hub.pep_disco_items(account, asker, node)
    }

    fn account_node_exists(
        &self,
        hub: &Hub,
        account: &BareJid,
        asker: &BareJid,
        node: &str,
    ) -> bool {
        hub.pep_readable_node(account, asker, node).is_some()
    }

    fn handle(&self, hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        let Some(owner) = request.account() else {
            return request.answer(Err(DefinedCondition::ServiceUnavailable), out);
        };
        let is_owner = owner == request.from.to_bare();
        let answer = hub.pep_request(&owner, is_owner, &request, out);
        answer_pubsub(request, answer, out);
    }
}

/// Sends `answer` to the requester; an error carries its pubsub-specific condition.
fn answer_pubsub(
    request: IqRequest,
    answer: Result<Option<Element>, PubsubError>,
    out: &mut Vec<Delivery>,
) {
    match answer {
        Ok(payload) => request.answer(Ok(payload), out),
        Err(PubsubError { condition, pubsub }) => {
            let unsupported = condition == DefinedCondition::FeatureNotImplemented;
            let mut error = stanza_error(condition);
            error.other = pubsub.map(|app| {
                if unsupported {
                    Element::builder("unsupported", ns::PUBSUB_ERRORS)
                        .attr(name("feature"), app)
                        .build()
                } else {
                    Element::builder(app, ns::PUBSUB_ERRORS).build()
                }
            });
            let reply = Iq::Error {
                from: request.reply_from,
                to: Some(request.from.clone().into()),
                id: request.id,
                error,
                payload: None,
            };
            out.push(Delivery::stanza(request.from, reply));
        }
    }
}

/// The `node` attribute of `element`, checked (`nodeid-required` if missing).
fn node_of(element: &Element) -> Result<&str, PubsubError> {
    match element.attr("node") {
        Some(node) if !node.is_empty() && node.len() <= MAX_NAME_BYTES => Ok(node),
        Some(node) if !node.is_empty() => Err(PubsubError::plain(DefinedCondition::NotAcceptable)),
        _ => Err(PubsubError::bad_request("nodeid-required")),
    }
}

/// The one child element of `element` named `name` in `namespace`.
fn child<'a>(element: &'a Element, name: &str, namespace: &str) -> Option<&'a Element> {
    element.children().find(|c| c.is(name, namespace))
}

impl Hub {
    /// Answers one pubsub request to `owner`'s PEP service.
    fn pep_request(
        &mut self,
        owner: &BareJid,
        is_owner: bool,
        request: &IqRequest,
        out: &mut Vec<Delivery>,
    ) -> Result<Option<Element>, PubsubError> {
        let pubsub = &request.payload;
        let owner_ns = pubsub.ns() == ns::PUBSUB_OWNER;
        // The action is the first child; `publish-options` and `configure` ride along.
        let Some(action) = pubsub.children().next() else {
            return Err(PubsubError::plain(DefinedCondition::BadRequest));
        };
        let reader = request.from.to_bare();
        let owner_only = || {
            if is_owner {
                Ok(())
            } else {
                Err(PubsubError::forbidden())
            }
        };
        match (owner_ns, request.kind, action.name()) {
            (false, Kind::Set, "publish") => {
                owner_only()?;
                self.pep_client_publish(owner, pubsub, action, out)
                    .map(Some)
            }
            (false, Kind::Set, "retract") => {
                owner_only()?;
                self.pep_retract(owner, action, out).map(|()| None)
            }
            (false, Kind::Set, "create") => {
                owner_only()?;
                self.pep_create(owner, pubsub, action).map(|()| None)
            }
            (false, Kind::Get, "items") => self.pep_items(owner, &reader, action).map(Some),
            (false, _, "subscribe" | "unsubscribe" | "options") => {
                Err(PubsubError::unsupported("subscribe"))
            }
            (false, _, "subscriptions") => Err(PubsubError::unsupported("retrieve-subscriptions")),
            (false, _, "affiliations") => Err(PubsubError::unsupported("retrieve-affiliations")),
            (true, Kind::Get, "configure") => {
                owner_only()?;
                self.pep_configure_get(owner, action).map(Some)
            }
            (true, Kind::Set, "configure") => {
                owner_only()?;
                self.pep_configure_set(owner, action).map(|()| None)
            }
            (true, Kind::Get, "default") => Ok(Some(
                Element::builder("pubsub", ns::PUBSUB_OWNER)
                    .append(
                        Element::builder("default", ns::PUBSUB_OWNER)
                            .append(config_form(&PepNodeConfig::default())),
                    )
                    .build(),
            )),
            (true, Kind::Set, "delete") => {
                owner_only()?;
                self.pep_delete(owner, action, out).map(|()| None)
            }
            (true, _, "purge") => Err(PubsubError::unsupported("purge-nodes")),
            (true, _, "subscriptions" | "affiliations") => {
                Err(PubsubError::unsupported("manage-subscriptions"))
            }
            _ => Err(PubsubError::plain(DefinedCondition::BadRequest)),
        }
    }

    /// XEP-0060 §7.1: a client's publication; answers with the item id (§7.1.2).
    fn pep_client_publish(
        &mut self,
        owner: &BareJid,
        pubsub: &Element,
        publish: &Element,
        out: &mut Vec<Delivery>,
    ) -> Result<Element, PubsubError> {
        let node = node_of(publish)?.to_string();
        let mut items = publish.children().filter(|c| c.is("item", ns::PUBSUB));
        let (Some(item), None) = (items.next(), items.next()) else {
            // §7.1.3.5 asks for exactly one item in PEP's persistent nodes.
            return Err(PubsubError::bad_request("item-required"));
        };
        let mut payloads = item.children();
        let payload = match (payloads.next(), payloads.next()) {
            (Some(payload), None) => payload.clone(),
            (None, _) => return Err(PubsubError::bad_request("payload-required")),
            (Some(_), Some(_)) => return Err(PubsubError::bad_request("invalid-payload")),
        };
        let id = match item.attr("id") {
            Some(id) if !id.is_empty() && id.len() <= MAX_NAME_BYTES => id.to_string(),
            Some(id) if !id.is_empty() => {
                return Err(PubsubError::plain(DefinedCondition::NotAcceptable))
            }
            _ => format!("{:016x}", rand::random::<u64>()),
        };
        let options = match child(pubsub, "publish-options", ns::PUBSUB) {
            Some(element) => match Options::from_form_in(element) {
                Some(options) => options,
                None if element.children().next().is_none() => Options::none(),
                None => return Err(PubsubError::plain(DefinedCondition::BadRequest)),
            },
            None => Options::none(),
        };
        let user = owner_name(owner)?;
        self.pep_publish_internal(&user, &node, &id, payload.clone(), &options, out)?;
        self.after_pep_publish(owner, &node, &id, &payload, out);
        Ok(Element::builder("pubsub", ns::PUBSUB)
            .append(
                Element::builder("publish", ns::PUBSUB)
                    .attr(name("node"), node)
                    .append(Element::builder("item", ns::PUBSUB).attr(name("id"), id)),
            )
            .build())
    }

    /// Publishes `payload` as item `item_id` of `owner`'s `node`, as the owner would (XEP-0060
    /// §7.1): the node is created on first use with `options` (PEP's defaults otherwise), an
    /// existing node must meet them (`conflict` + `precondition-not-met`), the limits apply,
    /// and the readers that want the node are notified. For services of this server that
    /// publish on an account's behalf (XEP-0398's avatar from the vCard); it does not call
    /// [`Hub::after_pep_publish`], so such a service does not hear its own publications.
    pub(crate) fn pep_publish_internal(
        &mut self,
        owner: &str,
        node: &str,
        item_id: &str,
        payload: Element,
        options: &Options,
        out: &mut Vec<Delivery>,
    ) -> Result<(), PubsubError> {
        let limits = self.pep.limits.clone();
        let owner_jid = self.account_jid(owner)?;
        let serialized = String::from(&payload);
        if serialized.len() > limits.max_item_bytes {
            return Err(PubsubError::new(
                DefinedCondition::NotAcceptable,
                Some("payload-too-big"),
            ));
        }
        let config = match self.store.pep_node(owner, node) {
            Err(_) => return Err(PubsubError::internal()),
            Ok(Some(config)) => {
                if !options.is_empty() && !options.met_by(&config, limits.max_items) {
                    return Err(PubsubError::new(
                        DefinedCondition::Conflict,
                        Some("precondition-not-met"),
                    ));
                }
                config
            }
            Ok(None) => {
                let config = match options.apply(
                    &PepNodeConfig::default(),
                    limits.max_items,
                    Unknown::Refuse,
                ) {
                    Ok(config) => config,
                    Err(Refused::Unknown(_)) => {
                        return Err(PubsubError::new(
                            DefinedCondition::Conflict,
                            Some("precondition-not-met"),
                        ))
                    }
                    Err(Refused::Invalid(_)) => {
                        return Err(PubsubError::plain(DefinedCondition::NotAcceptable))
                    }
                };
                self.pep_new_node(owner, node, &config)?;
                config
            }
        };
        let stored = self
            .store
            .pep_account_bytes(owner)
            .map_err(|_| PubsubError::internal())?;
        // An item replaced in place gives its bytes back.
        let replaced = self
            .store
            .pep_items_by_id(owner, node, &[item_id.to_string()])
            .map_err(|_| PubsubError::internal())?
            .iter()
            .map(|old| old.payload.len() as u64)
            .sum::<u64>();
        if (stored - replaced.min(stored)).saturating_add(serialized.len() as u64)
            > limits.max_account_bytes
        {
            return Err(PubsubError::plain(DefinedCondition::ResourceConstraint));
        }
        let item = PepItem {
            id: item_id.to_string(),
            payload: serialized,
        };
        match self.store.pep_publish(owner, node, &item, limits.max_items) {
            Ok(true) => {}
            Ok(false) => return Err(PubsubError::not_found()),
            Err(error) => {
                tracing::error!(owner, node, "could not store a PEP item: {error}");
                return Err(PubsubError::internal());
            }
        }
        if config.deliver_notifications {
            if let Some(event) = read::items_event(node, &item, config.deliver_payloads) {
                self.pep_notify(&owner_jid, node, &config, &event, out);
            }
        }
        Ok(())
    }

    /// Called after every publication by a client to its own PEP, once it is stored and
    /// notified: the place where another service reacts to what an account publishes (the
    /// vCard avatar of XEP-0398 follows `urn:xmpp:avatar:metadata` here, `avatars.rs`).
    pub(crate) fn after_pep_publish(
        &mut self,
        owner: &BareJid,
        node: &str,
        item_id: &str,
        payload: &Element,
        out: &mut Vec<Delivery>,
    ) {
        let _ = item_id;
        self.avatar_from_pep(owner, node, payload, out);
    }

    /// Creates `owner`'s `node` with `config`, within the node cap.
    fn pep_new_node(
        &mut self,
        owner: &str,
        node: &str,
        config: &PepNodeConfig,
    ) -> Result<(), PubsubError> {
        let count = self
            .store
            .pep_node_count(owner)
            .map_err(|_| PubsubError::internal())?;
        if count >= self.pep.limits.max_nodes {
            return Err(PubsubError::new(
                DefinedCondition::PolicyViolation,
                Some("max-nodes-exceeded"),
            ));
        }
        self.store
            .pep_set_node(owner, node, config, self.pep.limits.max_items)
            .map_err(|error| {
                tracing::error!(owner, node, "could not create a PEP node: {error}");
                PubsubError::internal()
            })
    }

    /// The bare JID of the local account `owner`; `item-not-found` for anything else.
    fn account_jid(&self, owner: &str) -> Result<BareJid, PubsubError> {
        let jid = BareJid::new(&format!("{owner}@{}", self.domain))
            .map_err(|_| PubsubError::not_found())?;
        if self.is_local_account(&jid) {
            Ok(jid)
        } else {
            Err(PubsubError::not_found())
        }
    }
}

/// The username of `owner`, an account's bare JID.
fn owner_name(owner: &BareJid) -> Result<String, PubsubError> {
    owner
        .node()
        .map(|n| n.as_str().to_string())
        .ok_or_else(PubsubError::not_found)
}

/// A stored payload as an element; one that cannot be read is skipped (and logged).
fn parse_payload(item: &PepItem) -> Option<Element> {
    match item.payload.parse::<Element>() {
        Ok(payload) => Some(payload),
        Err(error) => {
            tracing::warn!(id = item.id, "skipping an unreadable PEP item: {error}");
            None
        }
    }
}

#[cfg(test)]
mod tests;
