//! XEP-0199 XMPP ping: the server and every account answer a ping with an empty result, so
//! clients can check that the connection and the server are alive.

use tokio_xmpp::parsers::ns;

use super::service::{Entity, IqRequest, Service};
use super::{Delivery, Hub};

/// XEP-0199 §4.2 (client-to-server ping) and §4.3 (pinging an account, answered by the server).
pub(super) struct Ping;

impl Service for Ping {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server | Entity::Account => &[ns::PING],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.is_get("ping", ns::PING)
    }

    fn handle(&self, _hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        request.answer(Ok(None), out);
    }
}
