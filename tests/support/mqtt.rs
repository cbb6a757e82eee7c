#![allow(dead_code)]
//! MQTT publishers and subscribers for the tests: one message, many messages over one connection,
//! and reading the messages a broker retains.

use std::collections::BTreeMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// How long the broker may take to acknowledge or deliver.
const DEADLINE: Duration = Duration::from_secs(10);

fn options(port: u16) -> MqttOptions {
    let id = format!("test{:x}", rand::random::<u32>());
    MqttOptions::new(id, "127.0.0.1", port)
}

async fn disconnect(client: AsyncClient, eventloop: &mut rumqttc::EventLoop) {
    client.disconnect().await.expect("queue disconnect");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Publishes `messages` (topic, payload) in order over one connection with QoS 1, not
/// retained, and returns once the broker has acknowledged every one: a burst as fast as the
/// broker takes it.
pub async fn publish_many(port: u16, messages: &[(&str, String)]) {
    let (client, mut eventloop) = AsyncClient::new(options(port), messages.len().max(1) + 1);
    for (topic, payload) in messages {
        client
            .publish(
                *topic,
                QoS::AtLeastOnce,
                false,
                payload.clone().into_bytes(),
            )
            .await
            .expect("queue publish");
    }
    let mut acked = 0;
    let all = tokio::time::timeout(DEADLINE, async {
        while acked < messages.len() {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publishing to 127.0.0.1:{port}: {e}"),
            }
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "the broker acknowledged {acked} of {} messages within {DEADLINE:?}",
        messages.len()
    );
    disconnect(client, &mut eventloop).await;
}

/// Subscribes to `filter` and returns the retained messages the broker hands over, by topic,
/// once `expected` distinct topics have arrived (panics if they do not within the deadline).
pub async fn retained(port: u16, filter: &str, expected: usize) -> BTreeMap<String, String> {
    let (client, mut eventloop) = AsyncClient::new(options(port), 10);
    client
        .subscribe(filter, QoS::AtLeastOnce)
        .await
        .expect("queue subscribe");
    let mut found = BTreeMap::new();
    let complete = tokio::time::timeout(DEADLINE, async {
        while found.len() < expected {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    assert!(
                        p.retain,
                        "a live message on {} while reading retained ones",
                        p.topic
                    );
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    found.insert(p.topic.clone(), payload);
                }
                Ok(_) => {}
                Err(e) => panic!("subscribing at 127.0.0.1:{port}: {e}"),
            }
        }
    })
    .await;
    assert!(
        complete.is_ok(),
        "{} retained topics under {filter} within {DEADLINE:?}, expected {expected}: {:?}",
        found.len(),
        found.keys().collect::<Vec<_>>()
    );
    disconnect(client, &mut eventloop).await;
    found
}

/// Publishes one message with QoS 1 and waits for the broker's acknowledgement.
pub async fn publish(port: u16, topic: &str, payload: &[u8], retain: bool) {
    let id = format!("test{:x}", rand::random::<u32>());
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
        .await
        .expect("queue publish");
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("publishing to 127.0.0.1:{port}: {e}"),
            }
        }
    })
    .await;
    assert!(acked.is_ok(), "no PUBACK from the broker");
    disconnect(client, &mut eventloop).await;
}
