//! The upload slot service (XEP-0363) as transcripts: who asks for which slot, what comes back.

use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tokio_xmpp::Stanza;

use super::super::testing::*;
use crate::server::store::UploadState;
use crate::server::upload::UploadLimits;

const SERVICE: &str = "upload.localhost";

fn world(limits: UploadLimits) -> (World, FullJid) {
    let mut world = World::with_accounts(&["alice", "bob"]);
    world.hub.upload_start("https://localhost:5443/", limits);
    let alice = world.online("alice/phone", 0);
    (world, alice)
}

fn ask(world: &mut World, who: &FullJid, filename: &str, size: u64, kind: &str) -> Stanza {
    let content_type = if kind.is_empty() {
        String::new()
    } else {
        format!(" content-type='{kind}'")
    };
    let got = world.send(
        who,
        &format!(
            "<iq type='get' id='s1' to='{SERVICE}'><request xmlns='urn:xmpp:http:upload:0' \
             filename='{filename}' size='{size}'{content_type}/></iq>"
        ),
    );
    owned(got.only_to(who))
}

fn owned(stanza: &Stanza) -> Stanza {
    match stanza {
        Stanza::Iq(iq) => Stanza::Iq(iq.clone()),
        Stanza::Message(m) => Stanza::Message(m.clone()),
        Stanza::Presence(p) => Stanza::Presence(p.clone()),
    }
}

fn result_payload(stanza: &Stanza) -> &Element {
    match iq(stanza) {
        Iq::Result {
            payload: Some(payload),
            ..
        } => payload,
        other => panic!("expected a result with a payload, got {other:?}"),
    }
}

fn error_element(stanza: &Stanza) -> Element {
    Element::from(owned(stanza))
        .get_child("error", "jabber:client")
        .cloned()
        .expect("an error")
}

#[test]
fn a_slot_gives_one_url_with_a_random_token_and_the_escaped_name() {
    let (mut world, alice) = world(UploadLimits::default());
    let answer = ask(&mut world, &alice, "my photo.jpg", 1000, "image/jpeg");
    let slot = result_payload(&answer);
    let put = slot
        .get_child("put", ns::HTTP_UPLOAD)
        .unwrap()
        .attr("url")
        .unwrap();
    let get = slot
        .get_child("get", ns::HTTP_UPLOAD)
        .unwrap()
        .attr("url")
        .unwrap();
    assert_eq!(put, get);
    let rest = put.strip_prefix("https://localhost:5443/upload/").unwrap();
    let (token, name) = rest.split_once('/').unwrap();
    assert_eq!(token.len(), 32, "128 bits in hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(name, "my%20photo.jpg");
    let row = world.hub.store().upload_row(token).unwrap().unwrap();
    assert_eq!(row.owner, "alice");
    assert_eq!(row.state, UploadState::Slot);
    assert_eq!(
        (row.size, row.content_type.as_deref()),
        (1000, Some("image/jpeg"))
    );
    // Another slot for the same name gets another token.
    let again = ask(&mut world, &alice, "my photo.jpg", 1000, "image/jpeg");
    let other = result_payload(&again)
        .get_child("put", ns::HTTP_UPLOAD)
        .unwrap()
        .attr("url")
        .unwrap()
        .to_string();
    assert_ne!(other, put);
}

#[test]
fn a_file_over_the_maximum_is_refused_with_the_maximum() {
    let (mut world, alice) = world(UploadLimits {
        max_file_size: 5000,
        ..Default::default()
    });
    let answer = ask(&mut world, &alice, "big.bin", 5001, "");
    assert_eq!(
        error_condition(&answer),
        Some(DefinedCondition::NotAcceptable)
    );
    let error = error_element(&answer);
    let max = error
        .get_child("file-too-large", ns::HTTP_UPLOAD)
        .and_then(|e| e.get_child("max-file-size", ns::HTTP_UPLOAD))
        .map(Element::text);
    assert_eq!(max.as_deref(), Some("5000"));
    assert!(matches!(
        iq(&ask(&mut world, &alice, "ok.bin", 5000, "")),
        Iq::Result { .. }
    ));
}

#[test]
fn bad_names_sizes_and_types_are_not_acceptable() {
    let (mut world, alice) = world(UploadLimits::default());
    let long = "x".repeat(256);
    for (name, size, kind) in [
        ("../etc/passwd", 10, ""),
        ("a\\b", 10, ""),
        ("..", 10, ""),
        (long.as_str(), 10, ""),
        ("a.txt", 0, ""),
        ("a.txt", 10, "text"),
        ("a.txt", 10, "text/html; x=\"y\""),
    ] {
        let answer = ask(&mut world, &alice, name, size, kind);
        assert_eq!(
            error_condition(&answer),
            Some(DefinedCondition::NotAcceptable),
            "{name:?} {size} {kind:?}"
        );
    }
    assert!(world.hub.store().upload_usage("alice", 0, 300_000).unwrap() == 0);
}

#[test]
fn the_quota_refuses_with_resource_constraint_and_a_text_per_account() {
    let (mut world, alice) = world(UploadLimits {
        quota: 1500,
        ..Default::default()
    });
    let bob = world.online("bob/laptop", 0);
    assert!(matches!(
        iq(&ask(&mut world, &alice, "a", 1000, "")),
        Iq::Result { .. }
    ));
    let refused = ask(&mut world, &alice, "b", 501, "");
    assert_eq!(
        error_condition(&refused),
        Some(DefinedCondition::ResourceConstraint)
    );
    let text = error_element(&refused)
        .get_child("text", ns::XMPP_STANZAS)
        .map(Element::text)
        .unwrap_or_default();
    assert!(text.contains("1000 of 1500"), "{text}");
    assert!(matches!(
        iq(&ask(&mut world, &alice, "c", 500, "")),
        Iq::Result { .. }
    ));
    assert!(matches!(
        iq(&ask(&mut world, &bob, "d", 1500, "")),
        Iq::Result { .. }
    ));
}

#[test]
fn the_service_says_what_it_is_and_the_largest_file() {
    let (mut world, alice) = world(UploadLimits {
        max_file_size: 1234,
        ..Default::default()
    });
    let got = world.send(
        &alice,
        &format!(
            "<iq type='get' id='d' to='{SERVICE}'><query xmlns='{}'/></iq>",
            ns::DISCO_INFO
        ),
    );
    let xml = xml(got.only_to(&alice));
    assert!(
        xml.contains("category='store'") && xml.contains("type='file'"),
        "{xml}"
    );
    assert!(
        xml.contains("<feature var='urn:xmpp:http:upload:0'/>"),
        "{xml}"
    );
    assert!(
        xml.contains("<value>urn:xmpp:http:upload:0</value>"),
        "FORM_TYPE: {xml}"
    );
    assert!(
        xml.contains("var='max-file-size'><value>1234</value>"),
        "{xml}"
    );
    // And the server lists it among its services (XEP-0363 §2).
    let got = world.send(
        &alice,
        &format!(
            "<iq type='get' id='i' to='localhost'><query xmlns='{}'/></iq>",
            ns::DISCO_ITEMS
        ),
    );
    assert!(xml_of(&got, &alice).contains("jid='upload.localhost'"));
}

fn xml_of(got: &Deliveries, to: &FullJid) -> String {
    xml(got.only_to(to))
}

#[test]
fn without_the_https_listener_there_is_no_service() {
    let mut world = World::with_accounts(&["alice"]);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        &format!(
            "<iq type='get' id='i' to='localhost'><query xmlns='{}'/></iq>",
            ns::DISCO_ITEMS
        ),
    );
    assert!(!xml_of(&got, &alice).contains("upload.localhost"));
    let answer = ask(&mut world, &alice, "a", 10, "");
    assert!(matches!(iq(&answer), Iq::Error { .. }));
}

#[test]
fn messages_to_the_service_bounce_and_iq_errors_are_not_answered() {
    let (mut world, alice) = world(UploadLimits::default());
    let got = world.send(
        &alice,
        &format!("<message to='{SERVICE}'><body>hi</body></message>"),
    );
    assert_eq!(
        error_condition(got.only_to(&alice)),
        Some(DefinedCondition::ServiceUnavailable)
    );
    let got = world.send(
        &alice,
        &format!("<iq type='result' id='x' to='{SERVICE}'/>"),
    );
    assert!(got.is_empty());
    let got = world.send(&alice, &format!("<presence to='{SERVICE}'/>"));
    assert!(got.is_empty());
}

#[test]
fn the_server_lists_its_contact_addresses_in_a_serverinfo_form() {
    let mut world = World::with_accounts(&["alice"]);
    let limits = crate::server::limits::ServerLimits {
        contacts: vec![
            (
                "admin".into(),
                vec![
                    "mailto:ops@example.org".into(),
                    "xmpp:ops@example.org".into(),
                ],
            ),
            ("abuse".into(), vec!["mailto:abuse@example.org".into()]),
        ],
        ..Default::default()
    };
    world.hub.start(&limits);
    let alice = world.online("alice/phone", 0);
    let got = world.send(
        &alice,
        &format!(
            "<iq type='get' id='i' to='localhost'><query xmlns='{}'/></iq>",
            ns::DISCO_INFO
        ),
    );
    let payload = result_payload(got.only_to(&alice)).clone();
    let info = tokio_xmpp::parsers::disco::DiscoInfoResult::try_from(payload).unwrap();
    let form = info
        .extensions
        .iter()
        .find(|f| f.form_type() == Some(ns::SERVER_INFO))
        .expect("the serverinfo form (XEP-0157 §3)");
    let values = |var: &str| {
        form.fields
            .iter()
            .find(|f| f.var.as_deref() == Some(var))
            .map(|f| f.values.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        values("admin-addresses"),
        ["mailto:ops@example.org", "xmpp:ops@example.org"]
    );
    assert_eq!(values("abuse-addresses"), ["mailto:abuse@example.org"]);
    // The caps in the stream features hash this very answer, form included (XEP-0115 §5.1).
    let advertised =
        crate::server::hub::server_caps(crate::server::hub::registry::SERVICES, &limits.contacts)
            .unwrap();
    let computed = Element::from(crate::caps::caps_of(&info, crate::caps::CAPS_NODE).unwrap());
    assert_eq!(advertised.attr("ver"), computed.attr("ver"));
    let plain = crate::server::hub::server_caps(crate::server::hub::registry::SERVICES, &[]);
    assert_ne!(plain.unwrap().attr("ver"), advertised.attr("ver"));
}
