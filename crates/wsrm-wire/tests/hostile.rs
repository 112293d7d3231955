//! Large and hostile inputs generated in code (not committed as files): typed errors, bounded
//! memory and time, never a panic.

use bytes::Bytes;
use wsrm_proto::msg::{Action, Body, FaultDetail, FaultKind, Message, RmVersion};
use wsrm_wire::{decode, encode, DecodeErrorKind, Framing, LimitKind, Limits};

const HEAD: &str = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">urn:op</a:Action>"#;

fn envelope(extra_headers: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "{HEAD}{extra_headers}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ))
}

fn big() -> Limits {
    Limits {
        max_message_size: 8 << 20,
        ..Limits::default()
    }
}

fn limit_of(r: Result<wsrm_wire::Decoded, wsrm_wire::DecodeError>) -> LimitKind {
    match r {
        Err(e) => match e.kind() {
            DecodeErrorKind::LimitExceeded { what, .. } => {
                assert_eq!(e.http_status(), 400);
                assert!(e.fault().is_none());
                *what
            }
            k => panic!("expected a limit error, got {k:?}"),
        },
        Ok(_) => panic!("expected a limit error, decoded"),
    }
}

#[test]
fn hundred_thousand_nested_elements() {
    let n = 100_000;
    let body = format!("{}{}", "<x>".repeat(n), "</x>".repeat(n));
    let msg = envelope("", &body);
    assert_eq!(limit_of(decode(msg.clone(), &big())), LimitKind::Depth);
    // with the default size limit the same input is refused before parsing
    let e = decode(msg, &Limits::default()).unwrap_err();
    assert!(matches!(e.kind(), DecodeErrorKind::TooLarge { .. }));
    assert_eq!(e.http_status(), 413);
    // unclosed nesting (truncated) is also refused by depth first
    let msg = envelope("", &"<x>".repeat(n));
    assert_eq!(limit_of(decode(msg, &big())), LimitKind::Depth);
    // nesting in a header
    let msg = envelope(
        &format!(
            "{}{}",
            "<h:x xmlns:h=\"urn:h\">".repeat(40),
            "</h:x>".repeat(40)
        ),
        "",
    );
    assert_eq!(limit_of(decode(msg, &Limits::default())), LimitKind::Depth);
}

#[test]
fn depth_within_limit_is_accepted() {
    // Envelope(1) Body(2) + 30 = 32
    let body = format!("{}{}", "<x>".repeat(30), "</x>".repeat(30));
    let d = decode(envelope("", &body), &Limits::default()).unwrap();
    assert!(matches!(d.message.body, Body::Application(_)));
    let body = format!("{}{}", "<x>".repeat(31), "</x>".repeat(31));
    assert_eq!(
        limit_of(decode(envelope("", &body), &Limits::default())),
        LimitKind::Depth
    );
}

#[test]
fn prefix_floods() {
    // many namespace declarations on one element
    let decls: String = (0..5_000)
        .map(|i| format!(" xmlns:p{i}=\"urn:p{i}\""))
        .collect();
    let msg = envelope("", &format!("<x{decls}/>"));
    let k = limit_of(decode(msg, &big()));
    assert!(
        matches!(k, LimitKind::AttributesLength | LimitKind::Attributes),
        "{k:?}"
    );
    // just above the attribute count, below the byte limit
    let decls: String = (0..33).map(|i| format!(" xmlns:p{i}=\"u{i}\"")).collect();
    assert_eq!(
        limit_of(decode(
            envelope("", &format!("<x{decls}/>")),
            &Limits::default()
        )),
        LimitKind::Attributes
    );
    // a new prefix on each of many sibling elements: fine (scopes are popped)
    let many: String = (0..2_000)
        .map(|i| format!("<p{i}:e xmlns:p{i}=\"urn:p{i}\"/>"))
        .collect();
    let d = decode(envelope("", &many), &big()).unwrap();
    assert!(matches!(d.message.body, Body::Application(_)));
    // a long element name
    let name = "n".repeat(300);
    assert_eq!(
        limit_of(decode(
            envelope("", &format!("<{name}/>")),
            &Limits::default()
        )),
        LimitKind::NameLength
    );
}

#[test]
fn two_megabyte_body() {
    let payload = "y".repeat(2 << 20);
    let msg = envelope("", &format!("<data>{payload}</data>"));
    let e = decode(msg.clone(), &Limits::default()).unwrap_err();
    assert_eq!(
        e.kind(),
        &DecodeErrorKind::TooLarge {
            size: msg.len(),
            limit: 65_536
        }
    );
    assert_eq!(e.http_status(), 413);
    assert!(e.fault().is_none());
    // with a raised limit the body is kept, zero-copy
    let d = decode(msg.clone(), &big()).unwrap();
    let Body::Application(b) = &d.message.body else {
        panic!("not application")
    };
    assert_eq!(b.len(), "<data></data>".len() + payload.len());
    let base = msg.as_ptr() as usize;
    let p = b.as_ptr() as usize;
    assert!(
        p >= base && p + b.len() <= base + msg.len(),
        "body was copied"
    );
}

#[test]
fn more_than_128_ranges() {
    let ranges = |n: u64| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "<r:AcknowledgementRange Lower=\"{}\" Upper=\"{}\"/>",
                    2 * i + 1,
                    2 * i + 1
                )
            })
            .collect()
    };
    let ack = |n| {
        Bytes::from(format!(
            "{}<r:SequenceAcknowledgement xmlns:r=\"http://schemas.xmlsoap.org/ws/2005/02/rm\"><r:Identifier>urn:x</r:Identifier>{}</r:SequenceAcknowledgement></s:Header><s:Body/></s:Envelope>",
            HEAD.replace("urn:op", "http://schemas.xmlsoap.org/ws/2005/02/rm/SequenceAcknowledgement"),
            ranges(n)
        ))
    };
    let d = decode(ack(128), &Limits::default()).unwrap();
    assert_eq!(d.message.ack.unwrap().ranges.len(), 128);
    let e = decode(ack(129), &Limits::default()).unwrap_err();
    assert_eq!(e.code(), "InvalidRmHeader");
    let f = e.fault().unwrap();
    assert_eq!(f.kind, FaultKind::SequenceTerminated);
    assert_eq!(f.detail, FaultDetail::Identifier("urn:x".into()));
    assert_eq!(e.rm(), Some(RmVersion::Wsrm10));
    // 100,000 ranges: same answer (the size limit is raised to let them in)
    let e = decode(
        ack(100_000),
        &Limits {
            max_message_size: 16 << 20,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.code(), "InvalidRmHeader");
}

#[test]
fn header_count_and_text_length_limits() {
    let hs: String = (0..64)
        .map(|i| format!("<h:x{i} xmlns:h=\"urn:h\"/>"))
        .collect();
    assert_eq!(
        limit_of(decode(envelope(&hs, ""), &Limits::default())),
        LimitKind::Headers
    );
    let hs: String = (0..63)
        .map(|i| format!("<h:x{i} xmlns:h=\"urn:h\"/>"))
        .collect();
    assert_eq!(
        decode(envelope(&hs, ""), &Limits::default())
            .unwrap()
            .header_count,
        64
    );
    let long = "i".repeat(9_000);
    let msg = envelope(&format!("<a:MessageID>{long}</a:MessageID>"), "");
    assert_eq!(
        limit_of(decode(msg, &Limits::default())),
        LimitKind::TextLength
    );
}

#[test]
fn decode_error_faults_round_trip_through_the_writer() {
    // each refused message's fault can be written and read back as the same fault kind
    let inputs: Vec<(&str, Bytes)> = vec![
        ("rollover", Bytes::from(format!("{}<r:Sequence xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"><r:Identifier>urn:s</r:Identifier><r:MessageNumber>9223372036854775808</r:MessageNumber></r:Sequence></s:Header><s:Body/></s:Envelope>", HEAD))),
        ("mu", envelope("<q:x xmlns:q=\"urn:q\" s:mustUnderstand=\"true\"/>", "")),
        ("ack", Bytes::from(format!("{}<r:SequenceAcknowledgement xmlns:r=\"http://docs.oasis-open.org/ws-rx/wsrm/200702\"><r:Identifier>urn:s</r:Identifier><r:AcknowledgementRange Lower=\"4\" Upper=\"2\"/></r:SequenceAcknowledgement></s:Header><s:Body/></s:Envelope>", HEAD))),
        ("version", Bytes::from_static(b"<e:Envelope xmlns:e=\"urn:not-soap\"><e:Body/></e:Envelope>")),
    ];
    for (name, bytes) in inputs {
        let e = decode(bytes, &Limits::default()).unwrap_err();
        let fault = e.fault().unwrap_or_else(|| panic!("{name}: no fault"));
        let v = e.rm().unwrap_or_default();
        let mut m = Message::new(v, Action::Fault, Body::Fault(Box::new(fault.clone())));
        m.relates_to = e.message_id().cloned();
        let framing = Framing::new(
            e.soap().unwrap_or(wsrm_wire::SoapVersion::Soap12),
            e.addressing()
                .unwrap_or(wsrm_wire::AddressingVersion::Wsa10),
        );
        let out = encode(&m, &framing).unwrap();
        let back = decode(out.clone(), &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", String::from_utf8_lossy(&out)));
        let Body::Fault(got) = back.message.body else {
            panic!("{name}: not a fault")
        };
        assert_eq!(got.kind, fault.kind, "{name}");
        assert_eq!(got.detail, fault.detail, "{name}");
        if name == "rollover" {
            assert!(matches!(
                got.detail,
                FaultDetail::Rollover {
                    max_message_number: Some(9223372036854775807),
                    ..
                }
            ));
        }
    }
}

#[test]
fn version_specific_fault_codes_in_the_wrong_version_are_not_classified() {
    // LastMessageNumberExceeded does not exist in WS-RM 1.1: kept as an unclassified fault
    let xml = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action>http://docs.oasis-open.org/ws-rx/wsrm/200702/fault</a:Action></s:Header><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value xmlns:r="http://docs.oasis-open.org/ws-rx/wsrm/200702">r:LastMessageNumberExceeded</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en">x</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"#;
    let d = decode(Bytes::from_static(xml.as_bytes()), &Limits::default()).unwrap();
    let Body::Fault(f) = &d.message.body else {
        panic!("not a fault")
    };
    assert_eq!(
        f.kind,
        FaultKind::Other(Some(
            "{http://docs.oasis-open.org/ws-rx/wsrm/200702}LastMessageNumberExceeded".into()
        ))
    );
    assert!(encode(&d.message, &Framing::new(d.soap, d.addressing)).is_ok());
}
