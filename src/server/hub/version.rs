//! XEP-0092 software version: the server's name and version, for clients that show them.

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::ns;

use super::service::{Entity, IqRequest, Service, Target};
use super::{Delivery, Hub};

/// XEP-0092 §2: answered for the server's domain only (accounts are not asked for theirs).
pub(super) struct Version;

impl Service for Version {
    fn features(&self, entity: Entity) -> &'static [&'static str] {
        match entity {
            Entity::Server => &[ns::VERSION],
            Entity::Account => &[],
        }
    }

    fn handles(&self, request: &IqRequest) -> bool {
        request.at == Target::Server && request.is_get("query", ns::VERSION)
    }

    fn handle(&self, _hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        request.answer(Ok(Some(version())), out);
    }
}

fn version() -> Element {
    Element::builder("query", ns::VERSION)
        .append(Element::builder("name", ns::VERSION).append(env!("CARGO_PKG_NAME")))
        .append(Element::builder("version", ns::VERSION).append(env!("CARGO_PKG_VERSION")))
        .build()
}
