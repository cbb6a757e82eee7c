//! The router as data: subscriptions, publishes and retained messages in, deliveries out.

use super::*;

/// A PUBLISH of `payload` on `topic` (also used by the dispatcher's tests).
pub(in crate::broker) fn message(topic: &str, payload: &str, qos: QoS, retain: bool) -> Publish {
    let mut publish = Publish::new(topic, qos, payload.as_bytes().to_vec());
    publish.retain = retain;
    publish
}

/// A subscription to `path` (also used by the dispatcher's tests).
pub(in crate::broker) fn filter(path: &str, qos: QoS) -> SubscribeFilter {
    SubscribeFilter::new(path.into(), qos)
}

fn router() -> Router {
    Router::new(RouterLimits::default())
}

#[test]
fn a_publish_reaches_matching_subscribers_once_at_their_highest_qos() {
    let mut router = router();
    router.connect(1, "a".into());
    router.connect(2, "b".into());
    router.connect(3, "c".into());
    router.subscribe(
        1,
        &[
            filter("sensors/#", QoS::AtMostOnce),
            filter("sensors/+", QoS::ExactlyOnce),
        ],
    );
    router.subscribe(2, &[filter("other/#", QoS::AtLeastOnce)]);
    router.subscribe(3, &[filter("+/temperature", QoS::AtMostOnce)]);
    let routed = router
        .publish(&message(
            "sensors/temperature",
            "21",
            QoS::AtLeastOnce,
            false,
        ))
        .unwrap();
    let mut deliveries = routed.deliveries;
    deliveries.sort_by_key(|(id, _)| *id);
    assert_eq!(
        deliveries,
        vec![(1, QoS::AtLeastOnce), (3, QoS::AtMostOnce)]
    );
}

#[test]
fn qos_2_subscriptions_are_granted_qos_1_and_bad_filters_fail() {
    let mut router = router();
    router.connect(1, "a".into());
    let (codes, _) = router.subscribe(
        1,
        &[
            filter("a/#", QoS::ExactlyOnce),
            filter("a/#/b", QoS::AtMostOnce),
            filter("a+", QoS::AtMostOnce),
            filter("", QoS::AtMostOnce),
        ],
    );
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
        ]
    );
}

#[test]
fn retained_messages_come_with_the_retain_flag_and_an_empty_payload_clears_them() {
    let mut router = router();
    router
        .publish(&message("sensors/t", "19.25", QoS::AtLeastOnce, true))
        .unwrap();
    router
        .publish(&message("sensors/h", "40", QoS::AtMostOnce, true))
        .unwrap();
    router
        .publish(&message("sensors/x", "not kept", QoS::AtMostOnce, false))
        .unwrap();
    router.connect(1, "a".into());
    let (_, retained) = router.subscribe(1, &[filter("sensors/+", QoS::AtLeastOnce)]);
    let got: Vec<_> = retained
        .iter()
        .map(|p| (p.topic.as_str(), &p.payload[..], p.qos, p.retain))
        .collect();
    assert_eq!(
        got,
        vec![
            ("sensors/h", &b"40"[..], QoS::AtMostOnce, true),
            ("sensors/t", &b"19.25"[..], QoS::AtLeastOnce, true),
        ]
    );

    router
        .publish(&message("sensors/t", "", QoS::AtMostOnce, true))
        .unwrap();
    let (_, retained) = router.subscribe(1, &[filter("sensors/t", QoS::AtMostOnce)]);
    assert!(retained.is_empty(), "{retained:?}");
    assert_eq!(router.retained_bytes, "sensors/h".len() + 2);
}

#[test]
fn the_retained_store_is_bounded_and_never_keeps_an_outdated_value() {
    let mut router = Router::new(RouterLimits {
        max_retained: 2,
        max_retained_bytes: 20,
        ..RouterLimits::default()
    });
    let retain = |router: &mut Router, topic: &str, payload: &str| {
        !router
            .publish(&message(topic, payload, QoS::AtMostOnce, true))
            .unwrap()
            .retained_refused
    };
    assert!(retain(&mut router, "a", "1"));
    assert!(retain(&mut router, "b", "2"));
    assert!(!retain(&mut router, "c", "3"), "third topic over the count");
    assert!(
        retain(&mut router, "a", "replaced"),
        "replacing is not growing"
    );
    assert!(!retain(&mut router, "b", "far too long for the store"));
    router.connect(1, "x".into());
    let (_, retained) = router.subscribe(1, &[filter("#", QoS::AtMostOnce)]);
    let topics: Vec<_> = retained.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, vec!["a"], "b's old value must not survive");
}

#[test]
fn invalid_topic_names_are_refused() {
    let mut router = router();
    for topic in ["", "a/+", "a/#", "a\0b"] {
        assert_eq!(
            router.publish(&message(topic, "1", QoS::AtMostOnce, false)),
            Err(InvalidTopic),
            "{topic:?}"
        );
    }
}

#[test]
fn a_second_connection_with_the_same_client_id_takes_over() {
    let mut router = router();
    assert_eq!(router.connect(1, "bot".into()), None);
    router.subscribe(1, &[filter("#", QoS::AtMostOnce)]);
    assert_eq!(router.connect(2, "bot".into()), Some(1));
    // The old connection's late disconnect must not forget the new one.
    router.disconnect(1);
    assert_eq!(router.client_ids.get("bot"), Some(&2));
    let routed = router
        .publish(&message("t", "1", QoS::AtMostOnce, false))
        .unwrap();
    assert!(
        routed.deliveries.is_empty(),
        "subscriptions are per session"
    );
}

#[test]
fn subscriptions_per_client_are_bounded_and_unsubscribe_removes_them() {
    let mut router = Router::new(RouterLimits {
        max_subscriptions: 2,
        ..RouterLimits::default()
    });
    router.connect(1, "a".into());
    let (codes, _) = router.subscribe(
        1,
        &[
            filter("a", QoS::AtMostOnce),
            filter("b", QoS::AtMostOnce),
            filter("a", QoS::AtLeastOnce),
            filter("c", QoS::AtMostOnce),
        ],
    );
    assert_eq!(codes[2], SubscribeReasonCode::Success(QoS::AtLeastOnce));
    assert_eq!(codes[3], SubscribeReasonCode::Failure);
    router.unsubscribe(1, &["a".into()]);
    let routed = router
        .publish(&message("a", "1", QoS::AtMostOnce, false))
        .unwrap();
    assert!(routed.deliveries.is_empty());
}
