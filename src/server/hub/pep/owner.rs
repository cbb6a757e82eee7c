//! The owner's requests on its nodes other than publishing: create (XEP-0060 §8.1), retract
//! (§7.2), configure (§8.2) and delete (§8.4). The caller has checked that the requester is
//! the owner.

use tokio_xmpp::jid::BareJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::config::{self, config_form, name, PublishOptions as Options, Unknown};
use super::{child, node_of, owner_name, PubsubError};
use crate::server::hub::{Delivery, Hub};
use crate::server::store::PepNodeConfig;

impl Hub {
    /// XEP-0060 §8.1.2, §8.1.3: a node with a name, configured or not.
    pub(super) fn pep_create(
        &mut self,
        owner: &BareJid,
        pubsub: &Element,
        create: &Element,
    ) -> Result<(), PubsubError> {
        let node = match create.attr("node") {
            // Instant nodes (§8.1.2) are not offered.
            None => {
                return Err(PubsubError::new(
                    DefinedCondition::NotAcceptable,
                    Some("nodeid-required"),
                ))
            }
            Some(_) => node_of(create)?,
        };
        let user = owner_name(owner)?;
        if self
            .store
            .pep_node(&user, node)
            .map_err(|_| PubsubError::internal())?
            .is_some()
        {
            return Err(PubsubError::plain(DefinedCondition::Conflict));
        }
        let options = child(pubsub, "configure", ns::PUBSUB)
            .and_then(Options::from_form_in)
            .unwrap_or_default();
        let config = options
            .apply(
                &PepNodeConfig::default(),
                self.pep.limits.max_items,
                Unknown::Ignore,
            )
            .map_err(|_| PubsubError::plain(DefinedCondition::NotAcceptable))?;
        self.pep_new_node(&user, node, &config)
    }

    /// XEP-0060 §7.2: removes one item, notifying if asked to (§7.2.2.1) or configured to.
    pub(super) fn pep_retract(
        &mut self,
        owner: &BareJid,
        retract: &Element,
        out: &mut Vec<Delivery>,
    ) -> Result<(), PubsubError> {
        let node = node_of(retract)?;
        let user = owner_name(owner)?;
        let Some(id) = child(retract, "item", ns::PUBSUB).and_then(|item| item.attr("id")) else {
            return Err(PubsubError::bad_request("item-required"));
        };
        let config = self
            .store
            .pep_node(&user, node)
            .map_err(|_| PubsubError::internal())?
            .ok_or_else(PubsubError::not_found)?;
        if !self
            .store
            .pep_retract(&user, node, id)
            .map_err(|_| PubsubError::internal())?
        {
            return Err(PubsubError::not_found());
        }
        let notify = match retract.attr("notify") {
            Some("1" | "true") => true,
            Some(_) => false,
            None => config.notify_retract,
        };
        if notify && config.deliver_notifications {
            let event = Element::builder("items", ns::PUBSUB_EVENT)
                .attr(name("node"), node)
                .append(Element::builder("retract", ns::PUBSUB_EVENT).attr(name("id"), id))
                .build();
            self.pep_notify(owner, node, &config, &event, out);
        }
        Ok(())
    }

    /// XEP-0060 §8.4: deletes a node and its items, notifying its readers first if configured to.
    pub(super) fn pep_delete(
        &mut self,
        owner: &BareJid,
        delete: &Element,
        out: &mut Vec<Delivery>,
    ) -> Result<(), PubsubError> {
        let node = node_of(delete)?;
        let user = owner_name(owner)?;
        let config = self
            .store
            .pep_node(&user, node)
            .map_err(|_| PubsubError::internal())?
            .ok_or_else(PubsubError::not_found)?;
        self.store
            .pep_delete_node(&user, node)
            .map_err(|_| PubsubError::internal())?;
        if config.notify_delete {
            let event = Element::builder("delete", ns::PUBSUB_EVENT)
                .attr(name("node"), node)
                .build();
            self.pep_notify(owner, node, &config, &event, out);
        }
        Ok(())
    }

    /// XEP-0060 §8.2.1: the node's configuration form.
    pub(super) fn pep_configure_get(
        &self,
        owner: &BareJid,
        configure: &Element,
    ) -> Result<Element, PubsubError> {
        let node = node_of(configure)?;
        let user = owner_name(owner)?;
        let config = self
            .store
            .pep_node(&user, node)
            .map_err(|_| PubsubError::internal())?
            .ok_or_else(PubsubError::not_found)?;
        Ok(Element::builder("pubsub", ns::PUBSUB_OWNER)
            .append(
                Element::builder("configure", ns::PUBSUB_OWNER)
                    .attr(name("node"), node)
                    .append(config_form(&config)),
            )
            .build())
    }

    /// XEP-0060 §8.2.4: a submitted configuration form; a cancelled one changes nothing.
    pub(super) fn pep_configure_set(
        &mut self,
        owner: &BareJid,
        configure: &Element,
    ) -> Result<(), PubsubError> {
        let node = node_of(configure)?;
        let user = owner_name(owner)?;
        let config = self
            .store
            .pep_node(&user, node)
            .map_err(|_| PubsubError::internal())?
            .ok_or_else(PubsubError::not_found)?;
        let form = child(configure, "x", config::DATA_FORMS)
            .ok_or_else(|| PubsubError::plain(DefinedCondition::BadRequest))?;
        if form.attr("type") == Some("cancel") {
            return Ok(());
        }
        let options = Options::from_form_in(configure).unwrap_or_default();
        let changed = options
            .apply(&config, self.pep.limits.max_items, Unknown::Ignore)
            .map_err(|_| PubsubError::plain(DefinedCondition::NotAcceptable))?;
        self.store
            .pep_set_node(&user, node, &changed, self.pep.limits.max_items)
            .map_err(|_| PubsubError::internal())
    }
}
