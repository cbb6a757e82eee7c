//! The [`Router`] plus every client's outgoing queue. Applying a client's request and queueing
//! what it causes happen under one lock, so that per client the order of queued packets is the
//! order of events. No I/O: the connection tasks write the queues to the sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, Publish, SubAck, SubscribeFilter,
};
use tokio::sync::{mpsc, oneshot};

use super::router::{InvalidTopic, Router, RouterLimits};
use super::ConnId;

/// The sending side of one client's bounded queue.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    pub(crate) queue: mpsc::Sender<Packet>,
    /// Bytes queued and not yet written (the writer subtracts).
    pub(crate) queued_bytes: Arc<AtomicUsize>,
    pub(crate) max_bytes: usize,
}

impl Outbox {
    /// Queues `packet`; false when the queue is full (in packets or bytes) or closed.
    pub(crate) fn push(&self, packet: Packet) -> bool {
        let size = packet.size();
        let before = self.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if before.saturating_add(size) > self.max_bytes || self.queue.try_send(packet).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// A client as the dispatcher knows it: its queue, and the kick that ends its connection (dropping it
/// does).
#[derive(Debug)]
struct Registered {
    outbox: Outbox,
    _kick: oneshot::Sender<()>,
}

/// The [`Router`] plus every client's queue: applies a client's request and queues what it
/// causes, under one lock, so that per client the order of queued packets is the order of events
/// (a retained message can never overtake a newer one on its topic).
pub(crate) struct Dispatcher {
    router: Router,
    clients: HashMap<ConnId, Registered>,
}

impl Dispatcher {
    pub(crate) fn new(limits: RouterLimits) -> Dispatcher {
        Dispatcher {
            router: Router::new(limits),
            clients: HashMap::new(),
        }
    }

    /// Registers a connected client and queues its CONNACK; closes an earlier connection with
    /// the same client id.
    pub(crate) fn connect(
        &mut self,
        id: ConnId,
        client_id: String,
        outbox: Outbox,
        kick: oneshot::Sender<()>,
    ) {
        // The queue is new and empty: this cannot fail.
        outbox.push(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )));
        if let Some(previous) = self.router.connect(id, client_id.clone()) {
            tracing::debug!(client_id, "MQTT client id taken over by a new connection");
            self.clients.remove(&previous);
        }
        self.clients.insert(
            id,
            Registered {
                outbox,
                _kick: kick,
            },
        );
    }

    /// Forgets a client (whose connection has ended or is ending).
    pub(crate) fn disconnect(&mut self, id: ConnId) {
        self.router.disconnect(id);
        self.clients.remove(&id);
    }

    /// Subscribes and queues the SUBACK and the matching retained messages. True if that
    /// overflowed the client's queue (it is then removed).
    pub(crate) fn subscribe(&mut self, id: ConnId, pkid: u16, filters: &[SubscribeFilter]) -> bool {
        let (codes, retained) = self.router.subscribe(id, filters);
        let Some(client) = self.clients.get(&id) else {
            return true;
        };
        let mut ok = client.outbox.push(Packet::SubAck(SubAck::new(pkid, codes)));
        for publish in retained {
            ok = ok && client.outbox.push(Packet::Publish(publish));
        }
        if !ok {
            tracing::warn!("MQTT client's queue overflowed with retained messages; closing it");
            self.disconnect(id);
        }
        !ok
    }

    pub(crate) fn unsubscribe(&mut self, id: ConnId, filters: &[String]) {
        self.router.unsubscribe(id, filters);
    }

    /// Routes a message to every matching subscriber; those whose queue is full are closed.
    pub(crate) fn publish(&mut self, publish: &Publish) -> Result<(), InvalidTopic> {
        let routed = self.router.publish(publish)?;
        if routed.retained_refused {
            tracing::warn!(
                topic = publish.topic,
                "embedded MQTT broker: retained store full; message not retained"
            );
        }
        let mut slow = Vec::new();
        for (id, qos) in routed.deliveries {
            let Some(client) = self.clients.get(&id) else {
                continue;
            };
            let delivery = Publish {
                dup: false,
                qos,
                retain: false,
                topic: publish.topic.clone(),
                pkid: 0,
                payload: publish.payload.clone(),
            };
            if !client.outbox.push(Packet::Publish(delivery)) {
                slow.push(id);
            }
        }
        for id in slow {
            tracing::warn!(
                connection = id,
                "MQTT client does not keep up with its messages; closing it"
            );
            self.disconnect(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::QoS;

    use crate::broker::router::tests::{filter, message};

    fn outbox(packets: usize, bytes: usize) -> (Outbox, mpsc::Receiver<Packet>) {
        let (queue, receiver) = mpsc::channel(packets);
        let outbox = Outbox {
            queue,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes: bytes,
        };
        (outbox, receiver)
    }

    #[test]
    fn a_subscriber_whose_queue_is_full_is_removed_and_its_connection_told() {
        let mut dispatcher = Dispatcher::new(RouterLimits::default());
        let (slow, _slow_queue) = outbox(3, 1 << 20);
        let (kick, mut kicked) = oneshot::channel();
        dispatcher.connect(1, "slow".into(), slow, kick);
        let (fast, mut fast_queue) = outbox(100, 1 << 20);
        let (fast_kick, mut fast_kicked) = oneshot::channel();
        dispatcher.connect(2, "fast".into(), fast, fast_kick);
        assert!(!dispatcher.subscribe(1, 1, &[filter("t", QoS::AtMostOnce)]));
        assert!(!dispatcher.subscribe(2, 1, &[filter("t", QoS::AtMostOnce)]));
        // CONNACK and SUBACK are queued; one more fits, the next does not.
        for _ in 0..2 {
            dispatcher
                .publish(&message("t", "1", QoS::AtMostOnce, false))
                .unwrap();
        }
        assert!(matches!(
            kicked.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(matches!(
            fast_kicked.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        let mut fast_got = 0;
        while let Ok(packet) = fast_queue.try_recv() {
            fast_got += usize::from(matches!(packet, Packet::Publish(_)));
        }
        assert_eq!(fast_got, 2);
        assert!(!dispatcher.clients.contains_key(&1));
    }

    #[test]
    fn the_byte_bound_of_a_queue_holds() {
        let (outbox, _queue) = outbox(100, 64);
        assert!(outbox.push(Packet::Publish(message(
            "t",
            "0123456789",
            QoS::AtMostOnce,
            false
        ))));
        let big = "x".repeat(60);
        assert!(!outbox.push(Packet::Publish(message("t", &big, QoS::AtMostOnce, false))));
        assert_eq!(outbox.queued_bytes.load(Ordering::Relaxed), 15);
    }

    #[test]
    fn a_retained_message_is_queued_right_after_the_suback() {
        let mut dispatcher = Dispatcher::new(RouterLimits::default());
        dispatcher
            .publish(&message("t", "old", QoS::AtLeastOnce, true))
            .unwrap();
        let (outbox, mut queue) = outbox(100, 1 << 20);
        let (kick, _kicked) = oneshot::channel();
        dispatcher.connect(1, "a".into(), outbox, kick);
        dispatcher.subscribe(1, 7, &[filter("t", QoS::AtLeastOnce)]);
        dispatcher
            .publish(&message("t", "new", QoS::AtLeastOnce, true))
            .unwrap();
        let mut order = Vec::new();
        while let Ok(packet) = queue.try_recv() {
            order.push(match packet {
                Packet::ConnAck(_) => "connack".to_string(),
                Packet::SubAck(ack) => format!("suback {}", ack.pkid),
                Packet::Publish(p) => format!(
                    "{} retain={}",
                    String::from_utf8_lossy(&p.payload),
                    p.retain
                ),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(
            order,
            vec!["connack", "suback 7", "old retain=true", "new retain=false"]
        );
    }
}
