//! The services plugged into the hub, in one list.
//!
//! The list is handed to [`Hub::new`](super::Hub::new) by whoever builds the hub (the server,
//! in `src/server/mod.rs`), not read by the hub itself: the services use the hub's types, so the
//! hub must not import them back. Adding a service is one line here (see the hub's module docs).

use super::avatars::AvatarConversion;
use super::blocking::Blocking;
use super::carbons::Carbons;
use super::commands::AdHocCommands;
use super::disco::Disco;
use super::legacy_session::LegacySession;
use super::mam::Mam;
use super::offline::Offline;
use super::pep::Pep;
use super::ping::Ping;
use super::private::PrivateStorage;
use super::roster::RosterService;
use super::service::Service;
use super::vcard::VCardService;
use super::version::Version;

/// Every service of the hub. A new service is added here (see the hub's module docs); the
/// order is the order in which they are asked, and in which their features are listed.
pub(crate) const SERVICES: &[&dyn Service] = &[
    &Disco,
    &Ping,
    &Version,
    &LegacySession,
    &Carbons,
    &PrivateStorage,
    &RosterService,
    &Offline,
    &VCardService,
    &Pep,
    &AvatarConversion,
    &Blocking,
    &Mam,
    &AdHocCommands,
];
