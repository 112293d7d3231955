//! The writer produces what WCF produces (wire-protocol.md §1–§3, walkthroughs): exact bytes.

use std::sync::Arc;

use bytes::Bytes;
use wsrm_proto::msg::{
    AckHeader, Action, Body, CreateSequence, CreateSequenceResponse, Fault, FaultCode, FaultDetail,
    FaultKind, IncompleteSequenceBehavior, Message, Offer, RmVersion, SequenceHeader, SequenceId,
};
use wsrm_wire::{
    action_uri, encode, AddressingVersion, EncodeError, EndpointReference, Framing, SoapVersion,
};

const SREQ: &str = "urn:uuid:8c5e0f41-27d9-4b6a-b0f3-5a9d2e71c4b2";
const M1: &str = "urn:uuid:1d3f2a70-5b8e-4c1a-9a43-0c2b7e6f9a01";
const ENV12: &str = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing">"#;
const ENV11: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing">"#;
const R10: &str = r#" xmlns:r="http://schemas.xmlsoap.org/ws/2005/02/rm""#;
const R11: &str = r#" xmlns:r="http://docs.oasis-open.org/ws-rx/wsrm/200702""#;

fn s(b: &Bytes) -> &str {
    std::str::from_utf8(b).unwrap()
}

fn id() -> SequenceId {
    SequenceId::from(SREQ)
}

#[test]
fn w1_create_sequence() {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::CreateSequence,
        Body::CreateSequence(Box::new(CreateSequence {
            acks_to: String::new(),
            expires: None,
            offer: None,
        })),
    );
    m.message_id = Some(Arc::from(M1));
    m.to = Some(Arc::from("http://svc.example/orders.svc"));
    let out = encode(&m, &Framing::soap12_wsa10()).unwrap();
    let want = format!(
        "{ENV12}<s:Header><a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/02/rm/CreateSequence</a:Action><a:MessageID>{M1}</a:MessageID><a:To s:mustUnderstand=\"1\">http://svc.example/orders.svc</a:To></s:Header><s:Body><r:CreateSequence{R10}><r:AcksTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></r:AcksTo></r:CreateSequence></s:Body></s:Envelope>"
    );
    assert_eq!(s(&out), want);
}

#[test]
fn w1_data_and_standalone_ack_10() {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::Other(Arc::from("http://tempuri.org/IOrders/Submit")),
        Body::Application(Bytes::from_static(
            b"<Submit xmlns=\"http://tempuri.org/\"/>",
        )),
    );
    m.sequence = Some(SequenceHeader {
        identifier: id(),
        number: 1,
        last_message: false,
    });
    m.to = Some(Arc::from("http://svc.example/orders.svc"));
    let out = encode(&m, &Framing::soap12_wsa10()).unwrap();
    assert_eq!(
        s(&out),
        format!("{ENV12}<s:Header><r:Sequence s:mustUnderstand=\"1\"{R10}><r:Identifier>{SREQ}</r:Identifier><r:MessageNumber>1</r:MessageNumber></r:Sequence><a:Action s:mustUnderstand=\"1\">http://tempuri.org/IOrders/Submit</a:Action><a:To s:mustUnderstand=\"1\">http://svc.example/orders.svc</a:To></s:Header><s:Body><Submit xmlns=\"http://tempuri.org/\"/></s:Body></s:Envelope>")
    );

    let mut ack = Message::new(
        RmVersion::Wsrm10,
        Action::SequenceAcknowledgement,
        Body::Empty,
    );
    ack.ack = Some(AckHeader {
        identifier: id(),
        ranges: vec![(1, 1)],
        buffer_remaining: Some(7),
        ..AckHeader::default()
    });
    let out = encode(&ack, &Framing::soap12_wsa10()).unwrap();
    assert_eq!(
        s(&out),
        format!("{ENV12}<s:Header><r:SequenceAcknowledgement{R10}><r:Identifier>{SREQ}</r:Identifier><r:AcknowledgementRange Lower=\"1\" Upper=\"1\"/><netrm:BufferRemaining xmlns:netrm=\"http://schemas.microsoft.com/ws/2006/05/rm\">7</netrm:BufferRemaining></r:SequenceAcknowledgement><a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2005/02/rm/SequenceAcknowledgement</a:Action></s:Header><s:Body/></s:Envelope>")
    );
}

#[test]
fn empty_ack_per_version_and_final() {
    for (v, empty, fin) in [
        (
            RmVersion::Wsrm10,
            "<r:AcknowledgementRange Lower=\"0\" Upper=\"0\"/>",
            "",
        ),
        (RmVersion::Wsrm11, "<r:None/>", "<r:Final/>"),
    ] {
        let mut m = Message::new(v, Action::SequenceAcknowledgement, Body::Empty);
        m.ack = Some(AckHeader {
            identifier: id(),
            none: true,
            final_ack: true,
            ..AckHeader::default()
        });
        let out = encode(&m, &Framing::soap12_wsa10()).unwrap();
        let r = if v == RmVersion::Wsrm10 { R10 } else { R11 };
        assert!(
            s(&out).contains(&format!(
                "<r:SequenceAcknowledgement{r}><r:Identifier>{SREQ}</r:Identifier>{empty}{fin}</r:SequenceAcknowledgement>"
            )),
            "{}",
            s(&out)
        );
    }
}

#[test]
fn header_order_ack_ackrequested_sequence_then_addressing() {
    let mut m = Message::new(
        RmVersion::Wsrm11,
        Action::Other(Arc::from("urn:op")),
        Body::Application(Bytes::from_static(b"<x/>")),
    );
    m.sequence = Some(SequenceHeader {
        identifier: SequenceId::from("urn:uuid:a"),
        number: 2,
        last_message: false,
    });
    m.ack = Some(AckHeader {
        identifier: SequenceId::from("urn:uuid:b"),
        ranges: vec![(1, 2), (4, 4)],
        ..AckHeader::default()
    });
    m.ack_requested = Some(SequenceId::from("urn:uuid:a"));
    m.message_id = Some(Arc::from("urn:uuid:m"));
    m.reply_to = Some(Arc::from("http://c.example/cb"));
    m.relates_to = Some(Arc::from("urn:uuid:r"));
    m.to = Some(Arc::from("http://s.example/svc"));
    let out = encode(&m, &Framing::soap12_wsa10()).unwrap();
    let t = s(&out);
    let pos = |needle: &str| t.find(needle).unwrap_or_else(|| panic!("{needle} in {t}"));
    let order = [
        "<r:SequenceAcknowledgement",
        "<r:AckRequested",
        "<r:Sequence s:mustUnderstand=\"1\"",
        "<a:Action s:mustUnderstand=\"1\">",
        "<a:MessageID>",
        "<a:ReplyTo><a:Address>http://c.example/cb</a:Address></a:ReplyTo>",
        "<a:RelatesTo>",
        "<a:To s:mustUnderstand=\"1\">",
    ];
    for w in order.windows(2) {
        assert!(pos(w[0]) < pos(w[1]), "{} before {}", w[0], w[1]);
    }
    // mustUnderstand only on Sequence, Action, To
    assert_eq!(t.matches("mustUnderstand").count(), 3);
    assert!(t.contains("<r:AcknowledgementRange Lower=\"1\" Upper=\"2\"/><r:AcknowledgementRange Lower=\"4\" Upper=\"4\"/>"));
}

#[test]
fn w4_offer_and_csr_11() {
    let mut m = Message::new(
        RmVersion::Wsrm11,
        Action::CreateSequence,
        Body::CreateSequence(Box::new(CreateSequence {
            acks_to: "http://www.w3.org/2005/08/addressing/anonymous".into(),
            expires: None,
            offer: Some(Offer {
                identifier: SequenceId::from("urn:uuid:c"),
                endpoint: None,
                expires: None,
                incomplete_sequence_behavior: Some(
                    IncompleteSequenceBehavior::DiscardFollowingFirstGap,
                ),
            }),
        })),
    );
    m.message_id = Some(Arc::from(M1));
    let out = encode(&m, &Framing::soap12_wsa10()).unwrap();
    assert!(s(&out).contains(&format!("<s:Body><r:CreateSequence{R11}><r:AcksTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></r:AcksTo><r:Offer><r:Identifier>urn:uuid:c</r:Identifier><r:Endpoint><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></r:Endpoint><r:IncompleteSequenceBehavior>DiscardFollowingFirstGap</r:IncompleteSequenceBehavior></r:Offer></r:CreateSequence></s:Body>")), "{}", s(&out));

    let mut r = Message::new(
        RmVersion::Wsrm11,
        Action::CreateSequenceResponse,
        Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
            identifier: id(),
            expires: None,
            incomplete_sequence_behavior: Some(
                IncompleteSequenceBehavior::DiscardFollowingFirstGap,
            ),
            accept: Some("http://svc.example/orders.svc".into()),
        })),
    );
    r.relates_to = Some(Arc::from(M1));
    // anonymous To is omitted under WS-Addressing 1.0
    r.to = Some(Arc::from("http://www.w3.org/2005/08/addressing/anonymous"));
    let out = encode(&r, &Framing::soap12_wsa10()).unwrap();
    assert_eq!(s(&out), format!("{ENV12}<s:Header><a:Action s:mustUnderstand=\"1\">http://docs.oasis-open.org/ws-rx/wsrm/200702/CreateSequenceResponse</a:Action><a:RelatesTo>{M1}</a:RelatesTo></s:Header><s:Body><r:CreateSequenceResponse{R11}><r:Identifier>{SREQ}</r:Identifier><r:IncompleteSequenceBehavior>DiscardFollowingFirstGap</r:IncompleteSequenceBehavior><r:Accept><r:AcksTo><a:Address>http://svc.example/orders.svc</a:Address></r:AcksTo></r:Accept></r:CreateSequenceResponse></s:Body></s:Envelope>"));
}

#[test]
fn fault_12_unknown_sequence_10() {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::Fault,
        Body::Fault(Box::new(Fault::unknown_sequence(&id()))),
    );
    m.relates_to = Some(Arc::from(M1));
    let out = encode(&m, &Framing::soap12_wsa10()).unwrap();
    assert_eq!(s(&out), format!("{ENV12}<s:Header><a:Action s:mustUnderstand=\"1\">http://www.w3.org/2005/08/addressing/soap/fault</a:Action><a:RelatesTo>{M1}</a:RelatesTo></s:Header><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value{R10}>r:UnknownSequence</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang=\"en-US\">The value of wsrm:Identifier is not a known Sequence identifier.</s:Text></s:Reason><s:Detail><r:Identifier{R10}>{SREQ}</r:Identifier></s:Detail></s:Fault></s:Body></s:Envelope>"));
}

#[test]
fn fault_12_connection_limit_reached_11() {
    let m = Message::new(
        RmVersion::Wsrm11,
        Action::Fault,
        Body::Fault(Box::new(Fault::new(
            FaultCode::Receiver,
            FaultKind::ConnectionLimitReached,
            "busy",
            FaultDetail::None,
        ))),
    );
    let out = encode(&m, &Framing::soap12_wsa10()).unwrap();
    assert!(s(&out).contains("<a:Action s:mustUnderstand=\"1\">http://docs.oasis-open.org/ws-rx/wsrm/200702/fault</a:Action>"));
    assert!(s(&out).contains(&format!("<s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value{R11}>r:CreateSequenceRefused</s:Value><s:Subcode><s:Value xmlns:netrm=\"http://schemas.microsoft.com/ws/2006/05/rm\">netrm:ConnectionLimitReached</s:Value></s:Subcode></s:Subcode></s:Code>")), "{}", s(&out));
    assert!(!s(&out).contains("<s:Detail>"));
}

#[test]
fn w15_soap11_header_fault_and_body_fault() {
    let mut f = Framing::new(SoapVersion::Soap11, AddressingVersion::Wsa200408);
    f.to = Some(Arc::from(AddressingVersion::Wsa200408.anonymous()));
    let m = Message::new(
        RmVersion::Wsrm10,
        Action::Fault,
        Body::Fault(Box::new(Fault::unknown_sequence(&id()))),
    );
    let out = encode(&m, &f).unwrap();
    assert_eq!(s(&out), format!("{ENV11}<s:Header><a:Action s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2004/08/addressing/fault</a:Action><a:To s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To><r:SequenceFault{R10}><r:FaultCode>r:UnknownSequence</r:FaultCode><r:Identifier>{SREQ}</r:Identifier></r:SequenceFault></s:Header><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring xml:lang=\"en-US\">The value of wsrm:Identifier is not a known Sequence identifier.</faultstring></s:Fault></s:Body></s:Envelope>"));

    let m = Message::new(
        RmVersion::Wsrm11,
        Action::Fault,
        Body::Fault(Box::new(Fault::sequence_terminated(
            FaultCode::Receiver,
            &id(),
            "timeout",
        ))),
    );
    let out = encode(&m, &f).unwrap();
    assert!(s(&out).contains(&format!("<r:SequenceFault{R11}><r:FaultCode>r:SequenceTerminated</r:FaultCode><r:Detail><r:Identifier>{SREQ}</r:Identifier></r:Detail></r:SequenceFault>")));
    assert!(s(&out).contains("<faultcode>s:Server</faultcode>"));
    assert!(s(&out).contains("http://docs.oasis-open.org/ws-rx/wsrm/200702/fault</a:Action>"));

    let m = Message::new(
        RmVersion::Wsrm10,
        Action::Fault,
        Body::Fault(Box::new(Fault::create_sequence_refused(
            FaultCode::Sender,
            "no",
        ))),
    );
    let out = encode(&m, &f).unwrap();
    assert!(
        s(&out).contains(&format!(
            "<s:Fault><faultcode{R10}>r:CreateSequenceRefused</faultcode>"
        )),
        "{}",
        s(&out)
    );
    assert!(!s(&out).contains("SequenceFault"));
}

#[test]
fn w15_request_gets_anonymous_reply_to_and_reference_parameters_are_echoed() {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::TerminateSequence,
        Body::TerminateSequence {
            identifier: id(),
            last_msg_number: Some(3),
        },
    );
    m.message_id = Some(Arc::from(M1));
    let f = Framing::new(SoapVersion::Soap11, AddressingVersion::Wsa200408);
    let out = encode(&m, &f).unwrap();
    assert!(s(&out).contains("<a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>"));
    // 1.0 TerminateSequence has no LastMsgNumber
    assert!(!s(&out).contains("LastMsgNumber"));

    let epr = EndpointReference {
        address: Arc::from("http://client.example/cb"),
        reference_parameters: vec![
            Bytes::from_static(b"<c:Session xmlns:c=\"urn:c\">42</c:Session>"),
            Bytes::from_static(b"<c:K xmlns:c=\"urn:c\" v='a>b'/>"),
        ],
    };
    let ack = Message::new(RmVersion::Wsrm11, Action::AckRequested, Body::Empty);
    let out = encode(&ack, &Framing::soap12_wsa10().to_endpoint(&epr)).unwrap();
    assert!(s(&out).contains("<a:To s:mustUnderstand=\"1\">http://client.example/cb</a:To><c:Session xmlns:c=\"urn:c\" a:IsReferenceParameter=\"true\">42</c:Session><c:K xmlns:c=\"urn:c\" v='a>b' a:IsReferenceParameter=\"true\"/></s:Header>"), "{}", s(&out));
}

#[test]
fn dynamic_text_is_escaped() {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::Other(Arc::from("urn:a?x=1&y=<2>")),
        Body::Empty,
    );
    m.ack_requested = Some(SequenceId::from("id&<\"x\">"));
    let out = encode(&m, &Framing::soap12_wsa10()).unwrap();
    assert!(s(&out).contains("urn:a?x=1&amp;y=&lt;2&gt;</a:Action>"));
    assert!(s(&out).contains("<r:Identifier>id&amp;&lt;\"x\"&gt;</r:Identifier>"));
    let d = wsrm_wire::decode(out, &wsrm_wire::Limits::default()).unwrap();
    assert_eq!(d.message.ack_requested.unwrap().as_str(), "id&<\"x\">");
    assert_eq!(&*d.action, "urn:a?x=1&y=<2>");
}

#[test]
fn version_specific_actions_refused_in_the_other_version() {
    let m = Message::new(
        RmVersion::Wsrm10,
        Action::CloseSequence,
        Body::CloseSequence {
            identifier: id(),
            last_msg_number: None,
        },
    );
    assert!(matches!(
        encode(&m, &Framing::default()),
        Err(EncodeError::NotInVersion { .. })
    ));
    let m = Message::new(RmVersion::Wsrm11, Action::LastMessage, Body::Empty);
    assert!(matches!(
        encode(&m, &Framing::default()),
        Err(EncodeError::NotInVersion { .. })
    ));
    let m = Message::new(RmVersion::Wsrm10, Action::LastMessage, Body::Empty);
    assert_eq!(
        action_uri(&m, AddressingVersion::Wsa10).unwrap(),
        "http://schemas.xmlsoap.org/ws/2005/02/rm/LastMessage"
    );
    let m = Message::new(
        RmVersion::Wsrm11,
        Action::Fault,
        Body::Fault(Box::new(Fault::sequence_closed(&id()))),
    );
    assert_eq!(
        action_uri(&m, AddressingVersion::Wsa10).unwrap(),
        "http://docs.oasis-open.org/ws-rx/wsrm/200702/fault"
    );
    let m = Message::new(
        RmVersion::Wsrm11,
        Action::Fault,
        Body::Fault(Box::new(Fault::new(
            FaultCode::Sender,
            FaultKind::EndpointUnavailable,
            "x",
            FaultDetail::None,
        ))),
    );
    assert_eq!(
        action_uri(&m, AddressingVersion::Wsa10).unwrap(),
        "http://www.w3.org/2005/08/addressing/soap/fault"
    );
}

#[test]
fn framing_for_reply_follows_the_request() {
    use wsrm_wire::{decode, Limits};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    // WSA 2004/08 request with anonymous ReplyTo: the reply carries the 2004/08 anonymous To
    let req = decode(
        Bytes::from(std::fs::read(dir.join("w15-1-create-sequence.xml")).unwrap()),
        &Limits::default(),
    )
    .unwrap();
    let f = Framing::for_reply(&req);
    assert_eq!(
        (f.soap, f.addressing),
        (SoapVersion::Soap11, AddressingVersion::Wsa200408)
    );
    assert_eq!(
        f.to.as_deref(),
        Some("http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous")
    );
    let m = Message::new(
        RmVersion::Wsrm10,
        Action::CreateSequenceResponse,
        Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
            identifier: id(),
            expires: None,
            incomplete_sequence_behavior: None,
            accept: None,
        })),
    );
    assert!(s(&encode(&m, &f).unwrap()).contains("<a:To s:mustUnderstand=\"1\">http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"));
    // WSA 1.0 request without ReplyTo: no To on the reply
    let req = decode(
        Bytes::from(std::fs::read(dir.join("w01-1-create-sequence.xml")).unwrap()),
        &Limits::default(),
    )
    .unwrap();
    assert!(!s(&encode(&m, &Framing::for_reply(&req)).unwrap()).contains("<a:To"));
    // duplex ReplyTo with a reference parameter: To = the EPR address, parameter echoed
    let req = decode(
        Bytes::from(std::fs::read(dir.join("w05-1-create-sequence-duplex.xml")).unwrap()),
        &Limits::default(),
    )
    .unwrap();
    let out = encode(&m, &Framing::for_reply(&req)).unwrap();
    assert!(s(&out).contains("<a:To s:mustUnderstand=\"1\">http://client.example/callback/7f3e</a:To><c:Session xmlns:c=\"urn:example:client\" a:IsReferenceParameter=\"true\">42</c:Session>"), "{}", s(&out));
}

#[test]
fn body_relying_on_envelope_declarations_is_reframed_with_them() {
    use wsrm_wire::{decode, Limits};
    // gSOAP declares every namespace on the envelope; the body uses one of them
    let xml = r#"<E:Envelope xmlns:E="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa5="http://www.w3.org/2005/08/addressing" xmlns:p="urn:payload" xmlns="urn:default"><E:Header><wsa5:Action>urn:op</wsa5:Action></E:Header><E:Body><p:p>1</p:p><q/></E:Body></E:Envelope>"#;
    let d = decode(Bytes::from_static(xml.as_bytes()), &Limits::default()).unwrap();
    assert_eq!(
        d.body_namespaces,
        vec![
            (
                "E".to_string(),
                "http://www.w3.org/2003/05/soap-envelope".to_string()
            ),
            (
                "wsa5".to_string(),
                "http://www.w3.org/2005/08/addressing".to_string()
            ),
            ("p".to_string(), "urn:payload".to_string()),
            (String::new(), "urn:default".to_string()),
        ]
    );
    let mut f = Framing::new(d.soap, d.addressing);
    f.body_namespaces = d.body_namespaces.clone();
    let out = encode(&d.message, &f).unwrap();
    assert!(s(&out).contains("<s:Body xmlns:E=\"http://www.w3.org/2003/05/soap-envelope\" xmlns:wsa5=\"http://www.w3.org/2005/08/addressing\" xmlns:p=\"urn:payload\" xmlns=\"urn:default\"><p:p>1</p:p><q/></s:Body>"), "{}", s(&out));
    let again = decode(out, &Limits::default()).unwrap();
    assert_eq!(again.body_bytes, d.body_bytes);
    // WCF-shaped messages need nothing extra
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let d = decode(
        Bytes::from(std::fs::read(dir.join("w03-2-request.xml")).unwrap()),
        &Limits::default(),
    )
    .unwrap();
    assert!(d.body_namespaces.is_empty());
}
