//! XEP-0050 ad-hoc commands at the server: the server says it speaks the protocol, so clients
//! offer their command menus (profanity shows `/cmd` only when the user's server lists the
//! feature), and answers for its own command list, which is empty: the commands users run
//! are their contacts' (a bot's), reached through the contact's full JID.
//!
//! - disco#info lists `http://jabber.org/protocol/commands` (§2.1).
//! - The server's node `http://jabber.org/protocol/commands` is the `automation/command-list`
//!   node (§2.2, answered in `disco.rs`); its disco#items are empty.
//! - Executing any command at the server is `item-not-found`, "the responding JID cannot find
//!   the requested command node" (§4.4, Possible Errors).

use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::service::{Entity, IqRequest, Service, Target};
use super::{Delivery, Hub};

/// The namespace of XEP-0050, and the well-known disco node of a command list (§2.2).
pub(crate) const NS: &str = "http://jabber.org/protocol/commands";

/// The server's (empty) set of ad-hoc commands.
pub(super) struct AdHocCommands;

impl Service for AdHocCommands {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[NS],
            Entity::Account => &[],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.at == Target::Server && request.is_set("command", NS)
    }

    fn handle(&self, _hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        request.answer(Err(DefinedCondition::ItemNotFound), out);
    }
}
