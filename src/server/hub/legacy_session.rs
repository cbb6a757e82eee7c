//! The legacy session IQ (RFC 3921 §3), still sent by older clients after binding: there is
//! nothing to establish any more (RFC 6121 dropped it), so it is answered with an empty result.

use super::service::{IqRequest, Service, Target};
use super::{Delivery, Hub};

/// Legacy session establishment (RFC 3921 §3).
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";

/// Accepts `<session/>` sent to the server or to the sender's own account; advertises nothing.
pub(super) struct LegacySession;

impl Service for LegacySession {
    fn handles(&self, request: &IqRequest) -> bool {
        matches!(request.at, Target::Server | Target::OwnAccount)
            && request.is_set("session", NS_SESSION)
    }

    fn handle(&self, _hub: &mut Hub, request: IqRequest, out: &mut Vec<Delivery>) {
        request.answer(Ok(None), out);
    }
}
