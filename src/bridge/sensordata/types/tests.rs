//! The examples of XEP-0323 (version 0.6) parsed and written back.

use super::*;
use tokio_xmpp::minidom::Element;

fn element(xml: &str) -> Element {
    xml.parse().unwrap()
}

fn same(a: &Element, b: &Element) {
    assert_eq!(String::from(a), String::from(b));
}

#[test]
fn a_momentary_request_reads_as_in_example_1() {
    // §3.1, Example 1.
    let req = Req::try_from(element(
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='true'/>",
    ))
    .unwrap();
    assert_eq!(
        req,
        Req {
            seqnr: 1,
            momentary: true,
            ..Req::default()
        }
    );
    same(
        &Element::from(req),
        &element("<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='true'/>"),
    );
}

#[test]
fn accepted_and_fields_are_written_as_in_examples_2_and_3() {
    // §3.1, Example 2.
    same(
        &Element::from(Accepted {
            seqnr: 1,
            queued: false,
        }),
        &element("<accepted xmlns='urn:xmpp:iot:sensordata' seqnr='1'/>"),
    );
    // §3.1, Example 3.
    let example = element(
        "<fields xmlns='urn:xmpp:iot:sensordata' seqnr='1' done='true'>\
         <node nodeId='Device01'><timestamp value='2013-03-07T16:24:30'>\
         <numeric name='Temperature' momentary='true' automaticReadout='true' value='23.4' unit='°C'/>\
         </timestamp></node></fields>",
    );
    let fields = Fields::try_from(example.clone()).unwrap();
    let expected = Fields {
        seqnr: 1,
        done: true,
        nodes: vec![Node {
            node_id: "Device01".into(),
            timestamps: vec![Timestamp {
                value: "2013-03-07T16:24:30".into(),
                fields: vec![Field::Numeric(Numeric {
                    name: "Temperature".into(),
                    value: "23.4".into(),
                    unit: "°C".into(),
                    momentary: true,
                    historical_other: false,
                    automatic_readout: true,
                })],
            }],
        }],
    };
    assert_eq!(fields, expected);
    // Written back, it is the same element (attribute order aside).
    let written = Element::from(expected);
    assert_eq!(Fields::try_from(written.clone()).unwrap(), fields);
    assert_eq!(written.attr("done"), Some("true"));
    let numeric = written
        .get_child("node", NS)
        .and_then(|n| n.get_child("timestamp", NS))
        .and_then(|t| t.get_child("numeric", NS))
        .unwrap();
    assert_eq!(numeric.attr("momentary"), Some("true"));
    assert_eq!(numeric.attr("automaticReadout"), Some("true"));
    assert_eq!(
        numeric.attr("historicalOther"),
        None,
        "false flags are left out"
    );
}

#[test]
fn a_failure_reads_as_in_example_4() {
    // §3.2, Example 4.
    let failure = Failure::try_from(element(
        "<failure xmlns='urn:xmpp:iot:sensordata' seqnr='2' done='true'>\
         <error nodeId='Device01' timestamp='2013-03-07T17:13:30'>Timeout.</error></failure>",
    ))
    .unwrap();
    assert_eq!(
        failure,
        Failure {
            seqnr: 2,
            done: true,
            errors: vec![ReadError {
                node_id: "Device01".into(),
                timestamp: "2013-03-07T17:13:30".into(),
                text: "Timeout.".into(),
            }],
        }
    );
    let back = Failure::try_from(Element::from(failure.clone())).unwrap();
    assert_eq!(back, failure);
}

#[test]
fn the_read_out_all_sequence_of_example_6_parses() {
    // §3.4, Example 6: a scheduled request, queued, started, fields with kinds the bridge does
    // not type (skipped), done.
    let req = Req::try_from(element(
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='4' all='true' when='2013-03-07T19:00:00'/>",
    ))
    .unwrap();
    assert!(req.all && !req.momentary);
    assert_eq!(req.when.as_deref(), Some("2013-03-07T19:00:00"));
    let accepted = Accepted::try_from(element(
        "<accepted xmlns='urn:xmpp:iot:sensordata' seqnr='4' queued='true'/>",
    ))
    .unwrap();
    assert!(accepted.queued);
    assert_eq!(
        Started::try_from(element(
            "<started xmlns='urn:xmpp:iot:sensordata' seqnr='4'/>"
        ))
        .unwrap()
        .seqnr,
        4
    );
    let fields = Fields::try_from(element(
        "<fields xmlns='urn:xmpp:iot:sensordata' seqnr='4'><node nodeId='Device01'>\
         <timestamp value='2013-03-07T19:00:00'>\
         <numeric name='Temperature' momentary='true' automaticReadout='true' value='23.4' unit='°C'/>\
         <numeric name='Runtime' status='true' automaticReadout='true' value='12345' unit='h'/>\
         <string name='Device ID' identification='true' automaticReadout='true' value='Device01'/>\
         <boolean name='Door' momentary='true' value='false'/>\
         </timestamp></node></fields>",
    ))
    .unwrap();
    assert!(!fields.done);
    let values = &fields.nodes[0].timestamps[0].fields;
    assert_eq!(values.len(), 3, "{values:?}");
    assert!(matches!(&values[2], Field::String(s) if s.value == "Device01"));
    assert_eq!(
        Done::try_from(element("<done xmlns='urn:xmpp:iot:sensordata' seqnr='4'/>"))
            .unwrap()
            .seqnr,
        4
    );
}

#[test]
fn nodes_and_fields_of_examples_7_and_8_are_read_in_any_order() {
    // §3.5, Example 7 and §3.6, Example 8.
    let req = Req::try_from(element(
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='6' momentary='true'>\
         <node nodeId='Device04'/><field name='Energy'/><node nodeId='Device05'/><field name='Power'/></req>",
    ))
    .unwrap();
    assert_eq!(
        req.nodes
            .iter()
            .map(|n| n.node_id.as_str())
            .collect::<Vec<_>>(),
        ["Device04", "Device05"]
    );
    assert_eq!(
        req.fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["Energy", "Power"]
    );
}

#[test]
fn cancel_and_cancelled_as_in_example_9() {
    // §3.7, Example 9.
    let cancel = Cancel::try_from(element(
        "<cancel xmlns='urn:xmpp:iot:sensordata' seqnr='8'/>",
    ))
    .unwrap();
    same(
        &Element::from(Cancelled {
            seqnr: cancel.seqnr,
        }),
        &element("<cancelled xmlns='urn:xmpp:iot:sensordata' seqnr='8'/>"),
    );
}

#[test]
fn history_attributes_are_read() {
    let req = Req::try_from(element(
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='9' historical='true' \
         from='2013-03-07T00:00:00Z' to='2013-03-08T00:00:00Z' userToken='ignored'/>",
    ))
    .unwrap();
    assert!(req.historical && !req.momentary);
    assert_eq!(req.from.as_deref(), Some("2013-03-07T00:00:00Z"));
    assert_eq!(req.to.as_deref(), Some("2013-03-08T00:00:00Z"));
}

#[test]
fn malformed_requests_are_errors_not_panics() {
    for bad in [
        // No seqnr (required by §10), a seqnr that is not an xs:int, a flag that is not a
        // boolean, a node without its id.
        "<req xmlns='urn:xmpp:iot:sensordata' momentary='true'/>",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='one'/>",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='99999999999'/>",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1' momentary='yes'/>",
        "<req xmlns='urn:xmpp:iot:sensordata' seqnr='1'><node/></req>",
        "<req xmlns='urn:xmpp:iot:other' seqnr='1'/>",
    ] {
        assert!(Req::try_from(element(bad)).is_err(), "accepted {bad}");
    }
}
