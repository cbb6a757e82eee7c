//! `mqtt2xmpp server`: the small bundled XMPP server (client-to-server only, one domain).

pub mod cert;
pub mod limits;
pub mod sasl;
pub mod store;
