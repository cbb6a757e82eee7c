//! The hub thread: it owns the [`Hub`] (and through it the store), applies the connections'
//! [`HubCommand`]s one at a time, in order, and hands the resulting deliveries to the sessions'
//! bounded queues. A session whose queue is full is cut off rather than buffered without bound.
//! Whenever the queue of commands is empty, it tells the hub ([`Hub::idle`]), which writes the
//! message archive's pending rows then: under load, many messages share one transaction.
//!
//! The hub itself is sans-IO (commands in, deliveries out); this is the thin driver around it.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_xmpp::jid::{BareJid, FullJid};

use super::hub::{Delivery, Hub};
use super::shared::{HubCommand, Outbound};

/// The hub thread's handle on each bound session: the session's id, and its outgoing queue, or
/// `None` once [`deliver`] dropped an overflowing queue. The entry stays until the session's
/// `Unbind`, which is what makes the hub forget the session (and tell its contacts).
pub(crate) type Outboxes = HashMap<FullJid, (u64, Option<mpsc::Sender<Outbound>>)>;

/// The same for each connected external component (XEP-0114), by domain.
pub(crate) type ComponentOutboxes = HashMap<BareJid, (u64, Option<mpsc::Sender<Outbound>>)>;

/// The hub thread: applies commands in order and hands deliveries to the sessions' queues.
pub(crate) fn drive_hub(mut hub: Hub, mut commands: mpsc::Receiver<HubCommand>) {
    let mut outboxes: Outboxes = HashMap::new();
    let mut components = ComponentOutboxes::new();
    loop {
        let command = match commands.try_recv() {
            Ok(command) => command,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing waiting: the archive's rows go to disk now, in one transaction for
                // everything routed since the last time (a group commit, see `hub/mam.rs`).
                hub.idle();
                match commands.blocking_recv() {
                    Some(command) => command,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        apply(&mut hub, &mut outboxes, &mut components, command);
    }
    hub.idle();
}

/// Applies one command to the hub and hands the resulting deliveries to the sessions' and the
/// components' queues.
pub(crate) fn apply(
    hub: &mut Hub,
    outboxes: &mut Outboxes,
    components: &mut ComponentOutboxes,
    command: HubCommand,
) {
    let deliveries = match command {
        HubCommand::Bind {
            username,
            resource,
            id,
            outbox,
            reply,
        } => match hub.bind(&username, resource.as_deref()) {
            Ok((jid, deliveries)) => {
                // Deliveries first: they may close the session this one replaces.
                deliver(hub, outboxes, components, deliveries);
                outboxes.insert(jid.clone(), (id, Some(outbox)));
                let _ = reply.send(Some(jid));
                Vec::new()
            }
            Err(_) => {
                let _ = reply.send(None);
                Vec::new()
            }
        },
        HubCommand::Stanza { jid, id, stanza } => {
            if outboxes
                .get(&jid)
                .is_some_and(|(current, _)| *current == id)
            {
                hub.inbound(&jid, *stanza)
            } else {
                Vec::new()
            }
        }
        HubCommand::Unbind { jid, id, unacked } => {
            let mut deliveries = if outboxes
                .get(&jid)
                .is_some_and(|(current, _)| *current == id)
            {
                outboxes.remove(&jid);
                hub.unbind(&jid)
            } else {
                Vec::new()
            };
            // Even for a session already replaced (`conflict`): what it was sent and never
            // acknowledged must not be lost.
            if !unacked.is_empty() {
                deliveries.extend(hub.undelivered(&jid, unacked));
            }
            deliveries
        }
        HubCommand::ComponentConnect {
            domain,
            id,
            outbox,
            reply,
        } => {
            let answer = hub.connect_component(&domain);
            if answer.is_ok() {
                components.insert(domain, (id, Some(outbox)));
            }
            let _ = reply.send(answer);
            Vec::new()
        }
        HubCommand::ComponentStanza { domain, id, stanza } => {
            if components
                .get(&domain)
                .is_some_and(|(current, _)| *current == id)
            {
                hub.component_inbound(&domain, *stanza)
            } else {
                Vec::new()
            }
        }
        HubCommand::ComponentDisconnect { domain, id } => {
            if components
                .get(&domain)
                .is_some_and(|(current, _)| *current == id)
            {
                components.remove(&domain);
                hub.disconnect_component(&domain);
            }
            Vec::new()
        }
    };
    deliver(hub, outboxes, components, deliveries);
}

/// Hands deliveries to the sessions' and components' queues. A stanza that no session's queue
/// takes any more (the session's connection ended, or its queue overflowed) goes back to the hub
/// as undelivered, so that a message is stored offline rather than lost.
fn deliver(
    hub: &mut Hub,
    outboxes: &mut Outboxes,
    components: &mut ComponentOutboxes,
    deliveries: Vec<Delivery>,
) {
    let mut work = std::collections::VecDeque::from(deliveries);
    while let Some(delivery) = work.pop_front() {
        let (jid, outbound) = match delivery {
            Delivery::Stanza(jid, stanza) => (jid, Outbound::Stanza(stanza)),
            Delivery::Batch(jid, stanzas) => (jid, Outbound::Batch(stanzas)),
            Delivery::Close(jid, reason) => {
                if let Some((_, Some(outbox))) = outboxes.remove(&jid) {
                    let _ = outbox.try_send(Outbound::Close(reason));
                }
                continue;
            }
            Delivery::Component(domain, stanza) => {
                // A stanza a component's queue refuses (its connection is ending, or it
                // stopped reading and is being closed) comes back to its sender as if the
                // component were gone already: `remote-server-timeout`, not silence.
                let refused = match components.get_mut(&domain) {
                    Some((_, queue)) => offer(queue, Outbound::Stanza(stanza), &domain),
                    None => Some(Outbound::Stanza(stanza)),
                };
                if let Some(Outbound::Stanza(stanza)) = refused {
                    work.extend(hub.component_undelivered(*stanza));
                }
                continue;
            }
        };
        let Some((_, queue)) = outboxes.get_mut(&jid) else {
            continue;
        };
        let Some(refused) = offer(queue, outbound, &jid) else {
            continue;
        };
        let stanzas = match refused {
            Outbound::Stanza(stanza) => vec![*stanza],
            Outbound::Batch(stanzas) => stanzas,
            Outbound::Close(_) => continue,
        };
        work.extend(hub.undelivered(&jid, stanzas));
    }
}

/// Puts `outbound` in the queue of the session or component `who`; hands it back when the queue
/// is cut off, closed or full.
fn offer(
    queue: &mut Option<mpsc::Sender<Outbound>>,
    outbound: Outbound,
    who: &dyn std::fmt::Display,
) -> Option<Outbound> {
    let Some(outbox) = queue else {
        return Some(outbound); // Already cut off; its Unbind is on the way.
    };
    match outbox.try_send(outbound) {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(outbound)) => {
            // The client does not read: rather than buffer without bound, drop the queue's
            // sender; the session drains what is queued, then closes with `policy-violation`,
            // and its Unbind still finds the entry.
            tracing::warn!(%who, "outgoing queue full; closing the session");
            *queue = None;
            Some(outbound)
        }
        Err(mpsc::error::TrySendError::Closed(outbound)) => {
            // The connection ended after the hub routed this stanza to it; its Unbind is
            // queued behind the command being handled.
            tracing::debug!(%who, "session already closed; stanza undelivered");
            Some(outbound)
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::jid::{BareJid, Jid};
    use tokio_xmpp::parsers::message::Message;
    use tokio_xmpp::parsers::presence::Presence;

    use tokio::sync::oneshot;
    use tokio_xmpp::Stanza;

    use super::*;
    use crate::server::database_path;
    use crate::server::sasl::ScramKeys;
    use crate::server::store::Store;

    fn keys() -> ScramKeys {
        ScramKeys {
            salt: vec![1; 16],
            iterations: 4096,
            stored_key: vec![2; 20],
            server_key: vec![3; 20],
        }
    }

    /// A hub thread on a fresh database with the accounts alice and bob.
    fn hub_thread(
        dir: &tempfile::TempDir,
    ) -> (mpsc::Sender<HubCommand>, std::thread::JoinHandle<()>) {
        let store = Store::open(database_path(dir.path())).unwrap();
        for user in ["alice", "bob"] {
            store.create_account(user, &keys(), &keys()).unwrap();
        }
        let hub = Hub::new("localhost", store, crate::server::hub::registry::SERVICES).unwrap();
        let (commands, inbox) = mpsc::channel(16);
        (commands, std::thread::spawn(move || drive_hub(hub, inbox)))
    }

    /// Binds `user@localhost/resource`; once this returns, the hub has handled every earlier
    /// command (it handles them in order).
    fn bind(
        commands: &mpsc::Sender<HubCommand>,
        user: &str,
        resource: &str,
        id: u64,
        capacity: usize,
    ) -> (FullJid, mpsc::Receiver<Outbound>) {
        let (outbox, inbox) = mpsc::channel(capacity);
        let (reply, bound) = oneshot::channel();
        commands
            .blocking_send(HubCommand::Bind {
                username: user.into(),
                resource: Some(resource.into()),
                id,
                outbox,
                reply,
            })
            .unwrap();
        (bound.blocking_recv().unwrap().unwrap(), inbox)
    }

    fn send(commands: &mpsc::Sender<HubCommand>, jid: &FullJid, id: u64, stanza: Stanza) {
        let (jid, stanza) = (jid.clone(), Box::new(stanza));
        commands
            .blocking_send(HubCommand::Stanza { jid, id, stanza })
            .unwrap();
    }

    fn chat(to: Jid, body: &str) -> Stanza {
        Message::chat(Some(to))
            .with_body(Default::default(), body.into())
            .into()
    }

    /// Stops the hub thread and returns alice's stored offline messages.
    fn offline_for_alice(
        dir: &tempfile::TempDir,
        commands: mpsc::Sender<HubCommand>,
        thread: std::thread::JoinHandle<()>,
    ) -> Vec<String> {
        drop(commands);
        thread.join().unwrap();
        let store = Store::open(database_path(dir.path())).unwrap();
        let stored = store.offline_messages("alice").unwrap();
        stored.into_iter().map(|(_, xml)| xml).collect()
    }

    #[test]
    fn a_session_that_closed_while_a_message_was_routed_to_it_is_unbound_and_the_message_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (commands, thread) = hub_thread(&dir);
        let (alice, alice_queue) = bind(&commands, "alice", "r", 1, 8);
        let (bob, _bob_queue) = bind(&commands, "bob", "r", 2, 8);
        send(&commands, &alice, 1, Presence::available().into());
        // alice's connection ends; a message for her is routed before the hub hears of it.
        drop(alice_queue);
        send(&commands, &bob, 2, chat(alice.clone().into(), "too late"));
        commands
            .blocking_send(HubCommand::Unbind {
                jid: alice.clone(),
                id: 1,
                unacked: Vec::new(),
            })
            .unwrap();
        // alice is offline now, so the next message waits for her in storage.
        let alice_bare: BareJid = alice.to_bare();
        send(&commands, &bob, 2, chat(alice_bare.into(), "stored"));
        let stored = offline_for_alice(&dir, commands, thread);
        // The message that found the queue closed is not lost either.
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert!(stored[0].contains("too late"), "{stored:?}");
        assert!(stored[1].contains("stored"), "{stored:?}");
    }

    #[test]
    fn a_session_cut_off_for_a_full_queue_is_unbound_and_the_message_that_did_not_fit_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (commands, thread) = hub_thread(&dir);
        let (alice, mut alice_queue) = bind(&commands, "alice", "r", 1, 1);
        let (bob, _bob_queue) = bind(&commands, "bob", "r", 2, 8);
        // alice's own presence comes back to her and fills her one-stanza queue.
        send(&commands, &alice, 1, Presence::available().into());
        send(&commands, &bob, 2, chat(alice.clone().into(), "overflow"));
        let _barrier = bind(&commands, "bob", "barrier", 3, 8);
        // The session drains what was queued, then sees the queue end, and closes.
        assert!(matches!(
            alice_queue.blocking_recv(),
            Some(Outbound::Stanza(_))
        ));
        assert!(alice_queue.blocking_recv().is_none());
        commands
            .blocking_send(HubCommand::Unbind {
                jid: alice.clone(),
                id: 1,
                unacked: Vec::new(),
            })
            .unwrap();
        send(&commands, &bob, 2, chat(alice.to_bare().into(), "stored"));
        let stored = offline_for_alice(&dir, commands, thread);
        // The message that did not fit the queue is not lost either.
        assert_eq!(stored.len(), 2, "{stored:?}");
        assert!(stored[0].contains("overflow"), "{stored:?}");
        assert!(stored[1].contains("stored"), "{stored:?}");
    }

    #[test]
    fn the_unacknowledged_messages_of_a_replaced_session_are_stored_offline() {
        let dir = tempfile::tempdir().unwrap();
        let (commands, thread) = hub_thread(&dir);
        let (alice, _old_queue) = bind(&commands, "alice", "r", 1, 8);
        let unacked = chat(alice.clone().into(), "unacknowledged");
        let Stanza::Message(mut unacked) = unacked else {
            unreachable!("a chat is a message")
        };
        unacked.from = Some(BareJid::new("bob@localhost").unwrap().into());
        // A new login binds the same resource: the old session is replaced...
        let (_, _new_queue) = bind(&commands, "alice", "r", 2, 8);
        // ...and its connection, closing, hands back what was never acknowledged.
        commands
            .blocking_send(HubCommand::Unbind {
                jid: alice.clone(),
                id: 1,
                unacked: vec![unacked.into(), Presence::available().into()],
            })
            .unwrap();
        let stored = offline_for_alice(&dir, commands, thread);
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert!(stored[0].contains("unacknowledged"), "{stored:?}");
    }

    #[test]
    fn archived_messages_reach_the_disk_as_soon_as_the_hub_thread_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let (commands, thread) = hub_thread(&dir);
        let (alice, _alice_queue) = bind(&commands, "alice", "r", 1, 8);
        let (bob, _bob_queue) = bind(&commands, "bob", "r", 2, 8);
        send(&commands, &bob, 2, Presence::available().into());
        send(&commands, &alice, 1, chat(bob.clone().into(), "archived"));
        // Another connection sees both copies (alice's and bob's) without any query or
        // shutdown: the hub wrote them when its queue ran empty.
        let reader = Store::open(database_path(dir.path())).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let archived = |user| reader.archive_count(user).unwrap();
        while archived("alice") + archived("bob") < 2 {
            assert!(std::time::Instant::now() < deadline, "not written");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!((archived("alice"), archived("bob")), (1, 1));
        drop(commands);
        thread.join().unwrap();
    }

    #[test]
    fn a_message_for_a_component_whose_connection_just_ended_comes_back_as_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(database_path(dir.path())).unwrap();
        store.create_account("alice", &keys(), &keys()).unwrap();
        let mut hub = Hub::new("localhost", store, crate::server::hub::registry::SERVICES).unwrap();
        let gateway = BareJid::new("gateway.localhost").unwrap();
        hub.add_component(gateway.clone());
        let (commands, inbox) = mpsc::channel(16);
        let thread = std::thread::spawn(move || drive_hub(hub, inbox));
        let (outbox, component_queue) = mpsc::channel(8);
        let (reply, connected) = oneshot::channel();
        commands
            .blocking_send(HubCommand::ComponentConnect {
                domain: gateway.clone(),
                id: 1,
                outbox,
                reply,
            })
            .unwrap();
        assert!(connected.blocking_recv().unwrap().is_ok());
        let (alice, mut alice_queue) = bind(&commands, "alice", "r", 1, 8);
        // The component's connection ends; a message for it is routed before the hub hears.
        drop(component_queue);
        let sensor = Jid::new("sensor-7@gateway.localhost").unwrap();
        send(&commands, &alice, 1, chat(sensor.clone(), "still there?"));
        // Once another bind is answered, the hub has handled the message (commands are
        // handled in order).
        let _barrier = bind(&commands, "alice", "barrier", 2, 8);
        let Ok(Outbound::Stanza(stanza)) = alice_queue.try_recv() else {
            panic!("alice hears nothing");
        };
        let Stanza::Message(error) = *stanza else {
            panic!("not a message: {stanza:?}");
        };
        assert_eq!(
            error.type_,
            tokio_xmpp::parsers::message::MessageType::Error
        );
        assert_eq!(error.from, Some(sensor));
        let condition = error
            .payloads
            .iter()
            .find_map(|p| tokio_xmpp::parsers::stanza_error::StanzaError::try_from(p.clone()).ok())
            .map(|e| e.defined_condition);
        assert_eq!(
            condition,
            Some(tokio_xmpp::parsers::stanza_error::DefinedCondition::RemoteServerTimeout)
        );
        drop(commands);
        thread.join().unwrap();
    }
}
