//! Presence subscriptions between an account and a contact at an external component's domain
//! (a gateway's users, or the gateway's own domain, as XEP-0100 transports ask to be added).
//!
//! For two local accounts the hub moves both rosters at once (`presence.rs`); here only the
//! account's side lives on this server, and the component keeps its own. So the hub does, for
//! the account, what RFC 6121 asks of the user's server when the contact is elsewhere:
//!
//! - **outbound** (the account to the contact, §3.1.2, §3.2.2, §3.3.2, §3.4.2): the roster item
//!   changes (`ask` on a request, `from` on an approval, …) and is pushed, the stanza goes to
//!   the component stamped with the account's bare JID, and an approval is followed by the
//!   account's current presence;
//! - **inbound** (the contact to the account, §3.1.3, §3.1.6, §3.2.3, §3.3.3): a request is
//!   stored and delivered to the available resources (again at the next login if none is), or
//!   answered `subscribed` at once if the contact is already approved; an approval counts only
//!   if the account asked; every change is pushed;
//! - **presence**: the account's broadcasts reach the contacts subscribed to it through the
//!   component, its initial presence probes the contacts it is subscribed to (§4.3.1), and a
//!   probe from the component is answered with the account's presence if the contact is
//!   subscribed to it (§4.3.2).

use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::Stanza;

use super::super::{Delivery, Hub, ReplyTo};
use crate::server::store::Subscription;

impl Hub {
    /// A subscription stanza from the session `from` to a contact at the component of `domain`.
    pub(in crate::server::hub) fn subscription_to_component(
        &mut self,
        from: &FullJid,
        domain: BareJid,
        mut presence: Presence,
        out: &mut Vec<Delivery>,
    ) {
        let Some(to) = presence.to.clone() else {
            return;
        };
        let (user, contact) = (from.to_bare(), to.to_bare());
        let mut item = self.roster_entry(&user, &contact);
        let mut approved = false;
        match presence.type_ {
            PresenceType::Subscribe => {
                if !matches!(item.subscription, Subscription::To | Subscription::Both) {
                    item.ask = true;
                }
            }
            PresenceType::Subscribed => {
                if !item.pending_in {
                    return; // Nothing to approve (pre-approval is not supported).
                }
                item.pending_in = false;
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::From => Subscription::From,
                    Subscription::To | Subscription::Both => Subscription::Both,
                };
                approved = true;
            }
            PresenceType::Unsubscribe => {
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::To => Subscription::None,
                    Subscription::From | Subscription::Both => Subscription::From,
                };
            }
            PresenceType::Unsubscribed => {
                item.pending_in = false;
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::From => Subscription::None,
                    Subscription::To | Subscription::Both => Subscription::To,
                };
            }
            _ => return,
        }
        self.save_and_push(&user, item, out);
        // RFC 6121 §3.1.2: stamped with the account's bare JID.
        presence.from = Some(user.clone().into());
        presence.to = Some(contact.clone().into());
        let cancelled = presence.type_ == PresenceType::Unsubscribed;
        self.to_component(
            &ReplyTo::Session(from.clone()),
            domain.clone(),
            presence.into(),
            out,
        );
        if approved {
            // §3.1.5: the new subscriber sees the account's current presence.
            self.presence_of_account_to(&user, &contact.clone().into(), &domain, out);
        } else if cancelled {
            // §3.2.2: and a former one sees it go.
            for (session, _) in self.available_of(&user) {
                let mut gone = Presence::new(PresenceType::Unavailable);
                gone.from = Some(session.into());
                gone.to = Some(contact.clone().into());
                out.push(Delivery::Component(domain.clone(), Box::new(gone.into())));
            }
        }
    }

    /// A subscription stanza or probe from the component of `domain` to the account `user`.
    pub(in crate::server::hub) fn subscription_from_component(
        &mut self,
        domain: &BareJid,
        user: &BareJid,
        presence: Presence,
        out: &mut Vec<Delivery>,
    ) {
        // Always set: the connection gives a stanza without one the component's domain.
        let Some(from) = presence.from.clone() else {
            return;
        };
        let contact = from.to_bare();
        if !self.is_local_account(user) {
            if presence.type_ == PresenceType::Subscribe {
                // §3.1.3: no such account, so the request is refused on its behalf.
                let mut refusal = Presence::new(PresenceType::Unsubscribed);
                refusal.from = Some(user.clone().into());
                refusal.to = Some(contact.into());
                out.push(Delivery::Component(
                    domain.clone(),
                    Box::new(refusal.into()),
                ));
            }
            return;
        }
        let mut item = self.roster_entry(user, &contact);
        match presence.type_ {
            PresenceType::Probe => {
                if matches!(item.subscription, Subscription::From | Subscription::Both) {
                    self.presence_of_account_to(user, &from, domain, out);
                }
                return;
            }
            PresenceType::Subscribe => {
                if matches!(item.subscription, Subscription::From | Subscription::Both) {
                    // Approved already: answered on the account's behalf.
                    let mut answer = Presence::new(PresenceType::Subscribed);
                    answer.from = Some(user.clone().into());
                    answer.to = Some(contact.into());
                    out.push(Delivery::Component(domain.clone(), Box::new(answer.into())));
                    return;
                }
                if let Some(owner) = user.node() {
                    let recorded = self.store.record_subscription_request(
                        owner.as_str(),
                        &contact.to_string(),
                        None,
                    );
                    if let Err(error) = recorded {
                        tracing::error!(%user, "could not store a subscription request: {error}");
                    }
                }
            }
            PresenceType::Subscribed => {
                if !item.ask {
                    return; // §3.1.6: not asked for, so ignored.
                }
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::To => Subscription::To,
                    Subscription::From | Subscription::Both => Subscription::Both,
                };
                self.save_and_push(user, item, out);
            }
            PresenceType::Unsubscribe => {
                item.pending_in = false;
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::From => Subscription::None,
                    Subscription::To | Subscription::Both => Subscription::To,
                };
                self.save_and_push(user, item, out);
            }
            PresenceType::Unsubscribed => {
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::To => Subscription::None,
                    Subscription::From | Subscription::Both => Subscription::From,
                };
                self.save_and_push(user, item, out);
            }
            _ => return,
        }
        // The account's available resources see the stanza, from the contact's bare JID.
        let mut delivered = presence;
        delivered.from = Some(contact.into());
        self.presence_to_user(&delivered, user, out);
    }

    /// A broadcast (or any presence) for `contact`, if it is at a component's domain: handed
    /// to that component (when connected), and `true`; `false` for any other contact.
    pub(in crate::server::hub) fn presence_to_component_contact(
        &self,
        presence: &Presence,
        contact: &BareJid,
        out: &mut Vec<Delivery>,
    ) -> bool {
        let Some(domain) = self.component_serving(&contact.clone().into()) else {
            return false;
        };
        if self.components.get(&domain) == Some(&true) {
            let mut copy = presence.clone();
            copy.to = Some(contact.clone().into());
            out.push(Delivery::Component(domain, Box::new(copy.into())));
        }
        true
    }

    /// At the initial presence of one of `user`'s sessions: a probe for `contact`, if it is at
    /// a component's domain (RFC 6121 §4.3.1, from the account's bare JID), and `true`.
    pub(in crate::server::hub) fn probe_component_contact(
        &self,
        user: &BareJid,
        contact: &BareJid,
        out: &mut Vec<Delivery>,
    ) -> bool {
        let mut probe = Presence::new(PresenceType::Probe);
        probe.from = Some(user.clone().into());
        self.presence_to_component_contact(&probe, contact, out)
    }

    /// The last presence of each of `user`'s available sessions, to `to` at the component of
    /// `domain`.
    fn presence_of_account_to(
        &self,
        user: &BareJid,
        to: &Jid,
        domain: &BareJid,
        out: &mut Vec<Delivery>,
    ) {
        for (session, _) in self.available_of(user) {
            let Some(mut presence) = self.sessions.get(&session).and_then(|s| s.presence.clone())
            else {
                continue;
            };
            presence.from = Some(session.into());
            presence.to = Some(to.clone());
            out.push(Delivery::Component(
                domain.clone(),
                Box::new(Stanza::Presence(presence)),
            ));
        }
    }
}
