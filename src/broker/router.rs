//! The broker's routing state, without I/O: who is subscribed to what, and the retained
//! messages. Every operation takes data and returns data (SUBACK codes, the retained messages to
//! deliver, which connections get a message at which QoS), so it is tested without sockets.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{Publish, SubscribeFilter, SubscribeReasonCode};
use rumqttc::mqttbytes::{valid_filter, QoS};

use super::ConnId;
use crate::topic::matches;

#[cfg(test)]
pub(super) mod tests;

/// Limits of the [`Router`].
#[derive(Debug, Clone)]
pub(crate) struct RouterLimits {
    /// Most subscriptions per client.
    pub(crate) max_subscriptions: usize,
    /// Most retained topics.
    pub(crate) max_retained: usize,
    /// Most bytes (topics and payloads) of retained messages.
    pub(crate) max_retained_bytes: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        RouterLimits {
            max_subscriptions: 256,
            max_retained: 4096,
            max_retained_bytes: 8 * 1024 * 1024,
        }
    }
}

/// A PUBLISH topic name that is empty or has wildcards.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InvalidTopic;

/// What one published message causes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Routed {
    /// Which connections get it, at which QoS.
    pub(crate) deliveries: Vec<(ConnId, QoS)>,
    /// It should have been retained, but the retained store is full.
    pub(crate) retained_refused: bool,
}

/// One client's subscriptions.
#[derive(Debug)]
struct Subscriber {
    client_id: String,
    /// Filter and granted QoS, one entry per filter.
    filters: Vec<(String, QoS)>,
}

/// The broker's state, without I/O: who is subscribed to what, and the retained messages.
#[derive(Debug)]
pub(crate) struct Router {
    limits: RouterLimits,
    subscribers: HashMap<ConnId, Subscriber>,
    client_ids: HashMap<String, ConnId>,
    retained: BTreeMap<String, Publish>,
    retained_bytes: usize,
}

impl Router {
    pub(crate) fn new(limits: RouterLimits) -> Router {
        Router {
            limits,
            subscribers: HashMap::new(),
            client_ids: HashMap::new(),
            retained: BTreeMap::new(),
            retained_bytes: 0,
        }
    }

    /// A client connected; returns the earlier connection with the same client id, which is
    /// forgotten (MQTT-3.1.4-2: the new one takes over).
    pub(crate) fn connect(&mut self, id: ConnId, client_id: String) -> Option<ConnId> {
        let previous = self.client_ids.insert(client_id.clone(), id);
        if let Some(previous) = previous {
            self.subscribers.remove(&previous);
        }
        self.subscribers.insert(
            id,
            Subscriber {
                client_id,
                filters: Vec::new(),
            },
        );
        previous
    }

    /// A client is gone; its subscriptions with it (every session is clean).
    pub(crate) fn disconnect(&mut self, id: ConnId) {
        if let Some(gone) = self.subscribers.remove(&id) {
            if self.client_ids.get(&gone.client_id) == Some(&id) {
                self.client_ids.remove(&gone.client_id);
            }
        }
    }

    /// Adds subscriptions (granted at most QoS 1); returns the SUBACK codes and the retained
    /// messages to deliver, with their retain flag set.
    pub(crate) fn subscribe(
        &mut self,
        id: ConnId,
        filters: &[SubscribeFilter],
    ) -> (Vec<SubscribeReasonCode>, Vec<Publish>) {
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained = Vec::new();
        let Some(subscriber) = self.subscribers.get_mut(&id) else {
            codes.resize(filters.len(), SubscribeReasonCode::Failure);
            return (codes, retained);
        };
        for filter in filters {
            if !valid_filter(&filter.path) || filter.path.contains('\0') {
                codes.push(SubscribeReasonCode::Failure);
                continue;
            }
            let granted = min_qos(filter.qos, QoS::AtLeastOnce);
            let existing = subscriber
                .filters
                .iter()
                .position(|(path, _)| *path == filter.path);
            match existing {
                Some(index) => subscriber.filters[index].1 = granted,
                None if subscriber.filters.len() >= self.limits.max_subscriptions => {
                    codes.push(SubscribeReasonCode::Failure);
                    continue;
                }
                None => subscriber.filters.push((filter.path.clone(), granted)),
            }
            codes.push(SubscribeReasonCode::Success(granted));
            // MQTT-3.3.1-6: retained messages on every subscribe, also a repeated one.
            for (topic, message) in &self.retained {
                if matches(topic, &filter.path) {
                    retained.push(Publish {
                        qos: min_qos(message.qos, granted),
                        ..message.clone()
                    });
                }
            }
        }
        (codes, retained)
    }

    pub(crate) fn unsubscribe(&mut self, id: ConnId, filters: &[String]) {
        if let Some(subscriber) = self.subscribers.get_mut(&id) {
            subscriber
                .filters
                .retain(|(path, _)| !filters.contains(path));
        }
    }

    /// Updates the retained store and says who gets the message.
    pub(crate) fn publish(&mut self, publish: &Publish) -> Result<Routed, InvalidTopic> {
        let topic = publish.topic.as_str();
        if topic.is_empty() || topic.contains(['+', '#', '\0']) {
            return Err(InvalidTopic);
        }
        let mut routed = Routed::default();
        if publish.retain {
            routed.retained_refused = !self.retain(publish);
        }
        for (id, subscriber) in &self.subscribers {
            let best = subscriber
                .filters
                .iter()
                .filter(|(filter, _)| matches(topic, filter))
                .map(|(_, qos)| *qos)
                .reduce(max_qos);
            if let Some(granted) = best {
                routed.deliveries.push((*id, min_qos(publish.qos, granted)));
            }
        }
        Ok(routed)
    }

    /// Stores (or with an empty payload, clears) the retained message of a topic; false if it
    /// did not fit. A message that does not fit also clears the topic: a late subscriber must
    /// not get a value older than the newest one.
    fn retain(&mut self, publish: &Publish) -> bool {
        if let Some(old) = self.retained.remove(&publish.topic) {
            self.retained_bytes = self
                .retained_bytes
                .saturating_sub(old.topic.len() + old.payload.len());
        }
        if publish.payload.is_empty() {
            return true;
        }
        let size = publish.topic.len() + publish.payload.len();
        if self.retained.len() >= self.limits.max_retained
            || self.retained_bytes + size > self.limits.max_retained_bytes
        {
            return false;
        }
        self.retained_bytes += size;
        self.retained.insert(
            publish.topic.clone(),
            Publish {
                dup: false,
                qos: publish.qos,
                retain: true,
                topic: publish.topic.clone(),
                pkid: 0,
                // A copy: a slice would keep the whole receive buffer it came from alive.
                payload: Bytes::copy_from_slice(&publish.payload),
            },
        );
        true
    }
}

fn min_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) {
        a
    } else {
        b
    }
}

fn max_qos(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) {
        a
    } else {
        b
    }
}
