//! A mustUnderstand header the codec does not understand is refused with the SOAP
//! MustUnderstand fault; under SOAP 1.2 the fault names the header in an `env:NotUnderstood`
//! header block (SOAP 1.2 part 1 §5.4.8). Faults are addressed to FaultTo, else ReplyTo.

use std::sync::Arc;

use bytes::Bytes;
use wsrm_proto::msg::{Action, Body, FaultCode, FaultKind, Message};
use wsrm_wire::{decode, encode, AddressingVersion, DecodeErrorKind, Framing, Limits, SoapVersion};

const SEC: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";

fn request(soap_ns: &str, extra_headers: &str) -> Bytes {
    Bytes::from(format!(
        r#"<s:Envelope xmlns:s="{soap_ns}" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">http://tempuri.org/X</a:Action><a:MessageID>urn:uuid:m1</a:MessageID>{extra_headers}</s:Header><s:Body><X xmlns="http://tempuri.org/"/></s:Body></s:Envelope>"#
    ))
}

fn fault_message(e: &wsrm_wire::DecodeError) -> Message {
    let f = e
        .fault()
        .expect("a MustUnderstand refusal is answered with a fault");
    let mut m = Message::new(
        e.rm().unwrap_or_default(),
        Action::Fault,
        Body::Fault(Box::new(f)),
    );
    m.relates_to = e.message_id().cloned();
    m
}

#[test]
fn unknown_must_understand_header_yields_not_understood_fault_soap12() {
    let hdr = format!(r#"<sec:Security xmlns:sec="{SEC}" s:mustUnderstand="true"/>"#);
    let e = decode(
        request("http://www.w3.org/2003/05/soap-envelope", &hdr),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e.kind(), DecodeErrorKind::MustUnderstand { .. }));
    assert_eq!(e.not_understood(), Some((SEC, "Security")));
    assert_eq!(e.http_status(), 500);
    let f = e.fault().unwrap();
    assert_eq!(f.kind, FaultKind::MustUnderstand);
    assert_eq!(f.code, FaultCode::Sender);
    assert!(f.reason.starts_with(&format!(
        "The header 'Security' from the namespace '{SEC}' was not understood"
    )));

    let framing = Framing::for_error(&e, &Framing::soap12_wsa10());
    assert_eq!(
        framing.not_understood,
        vec![(SEC.to_owned(), "Security".to_owned())]
    );
    let out = encode(&fault_message(&e), &framing).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        text,
        format!(
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">http://www.w3.org/2005/08/addressing/soap/fault</a:Action><a:RelatesTo>urn:uuid:m1</a:RelatesTo><s:NotUnderstood qname="h:Security" xmlns:h="{SEC}"/></s:Header><s:Body><s:Fault><s:Code><s:Value>s:MustUnderstand</s:Value></s:Code><s:Reason><s:Text xml:lang="en-US">{}</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"#,
            f.reason.replace('\'', "&apos;")
        )
        .replace("&apos;", "'"),
    );
    // the fault reads back: a MustUnderstand fault naming the header
    let d = decode(out, &Limits::default()).unwrap();
    assert_eq!(
        d.not_understood,
        vec![(SEC.to_owned(), "Security".to_owned())]
    );
    match &d.message.body {
        Body::Fault(f) => assert_eq!(f.kind, FaultKind::MustUnderstand),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.message.relates_to.as_deref(), Some("urn:uuid:m1"));
}

#[test]
fn soap11_must_understand_fault_has_no_not_understood_header() {
    let hdr = format!(r#"<sec:Security xmlns:sec="{SEC}" s:mustUnderstand="1"/>"#);
    let e = decode(
        request("http://schemas.xmlsoap.org/soap/envelope/", &hdr),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(e.soap(), Some(SoapVersion::Soap11));
    assert_eq!(e.not_understood(), Some((SEC, "Security")));
    let framing = Framing::for_error(&e, &Framing::soap12_wsa10());
    assert_eq!(framing.soap, SoapVersion::Soap11);
    let out = encode(&fault_message(&e), &framing).unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert!(!text.contains("NotUnderstood"), "{text}");
    assert!(
        text.contains("<faultcode>s:MustUnderstand</faultcode>"),
        "{text}"
    );
}

#[test]
fn duplicated_rm_header_names_the_header() {
    let seq = r#"<r:Sequence s:mustUnderstand="1" xmlns:r="http://schemas.xmlsoap.org/ws/2005/02/rm"><r:Identifier>urn:uuid:s</r:Identifier><r:MessageNumber>1</r:MessageNumber></r:Sequence>"#;
    let e = decode(
        request(
            "http://www.w3.org/2003/05/soap-envelope",
            &format!("{seq}{seq}"),
        ),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.not_understood(),
        Some(("http://schemas.xmlsoap.org/ws/2005/02/rm", "Sequence"))
    );
}

#[test]
fn mixed_versions_fault_names_no_header() {
    let e = decode(
        request(
            "http://www.w3.org/2003/05/soap-envelope",
            r#"<a2:To xmlns:a2="http://schemas.xmlsoap.org/ws/2004/08/addressing">http://x/</a2:To>"#,
        ),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(e.kind(), DecodeErrorKind::MixedVersions { .. }));
    assert_eq!(e.not_understood(), None);
    let framing = Framing::for_error(&e, &Framing::soap12_wsa10());
    assert!(framing.not_understood.is_empty());
}

#[test]
fn not_understood_header_with_unprefixed_qname_and_invalid_names() {
    let mut m = Message::new(
        Default::default(),
        Action::Fault,
        Body::Fault(Box::new(wsrm_proto::msg::Fault::new(
            FaultCode::Sender,
            FaultKind::MustUnderstand,
            "x",
            Default::default(),
        ))),
    );
    m.relates_to = Some(Arc::from("urn:uuid:m1"));
    let mut f = Framing::soap12_wsa10();
    f.not_understood = vec![(String::new(), "Plain".into())];
    let out = encode(&m, &f).unwrap();
    assert!(std::str::from_utf8(&out)
        .unwrap()
        .contains(r#"<s:NotUnderstood qname="Plain"/>"#));
    let d = decode(out, &Limits::default()).unwrap();
    assert_eq!(d.not_understood, vec![(String::new(), "Plain".to_owned())]);
    // a name that is not an NCName cannot be written
    f.not_understood = vec![("urn:x".into(), "a b".into())];
    assert!(encode(&m, &f).is_err());
    f.not_understood = vec![("urn:x".into(), "p:q".into())];
    assert!(encode(&m, &f).is_err());
    // only a MustUnderstand fault names headers
    let plain = Message::new(
        Default::default(),
        Action::Other(Arc::from("urn:a")),
        Body::Empty,
    );
    f.not_understood = vec![("urn:x".into(), "Q".into())];
    assert!(!std::str::from_utf8(&encode(&plain, &f).unwrap())
        .unwrap()
        .contains("NotUnderstood"));
}

#[test]
fn fault_to_is_read_and_faults_are_addressed_to_it() {
    let hdrs = r#"<a:ReplyTo><a:Address>http://client/reply</a:Address></a:ReplyTo><a:FaultTo><a:Address>http://client/faults</a:Address><a:ReferenceParameters><p:Session xmlns:p="urn:p">7</p:Session></a:ReferenceParameters></a:FaultTo>"#;
    let d = decode(
        request("http://www.w3.org/2003/05/soap-envelope", hdrs),
        &Limits::default(),
    )
    .unwrap();
    let ft = d.fault_to.as_ref().expect("FaultTo");
    assert_eq!(&*ft.address, "http://client/faults");
    assert_eq!(
        ft.reference_parameters,
        vec![Bytes::from_static(
            br#"<p:Session xmlns:p="urn:p">7</p:Session>"#
        )]
    );
    assert_eq!(
        d.reply_to.as_ref().map(|e| &*e.address),
        Some("http://client/reply")
    );
    // a fault goes to FaultTo, a reply to ReplyTo
    let f = Framing::for_fault(&d);
    assert_eq!(f.to.as_deref(), Some("http://client/faults"));
    assert_eq!(f.reference_parameters.len(), 1);
    assert_eq!(
        Framing::for_reply(&d).to.as_deref(),
        Some("http://client/reply")
    );
    // without FaultTo a fault follows ReplyTo
    let d2 = decode(
        request(
            "http://www.w3.org/2003/05/soap-envelope",
            r#"<a:ReplyTo><a:Address>http://client/reply</a:Address></a:ReplyTo>"#,
        ),
        &Limits::default(),
    )
    .unwrap();
    assert!(d2.fault_to.is_none());
    assert_eq!(
        Framing::for_fault(&d2).to.as_deref(),
        Some("http://client/reply")
    );
    // a refused message's FaultTo (read before the refusal) addresses the error's fault
    let hdr = format!(
        r#"<a:FaultTo><a:Address>http://client/faults</a:Address></a:FaultTo><sec:Security xmlns:sec="{SEC}" s:mustUnderstand="1"/>"#
    );
    let e = decode(
        request("http://www.w3.org/2003/05/soap-envelope", &hdr),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.fault_endpoint().map(|x| &*x.address),
        Some("http://client/faults")
    );
    let f = Framing::for_error(
        &e,
        &Framing::new(SoapVersion::Soap11, AddressingVersion::Wsa200408),
    );
    assert_eq!(f.soap, SoapVersion::Soap12);
    assert_eq!(f.addressing, AddressingVersion::Wsa10);
    assert_eq!(f.to.as_deref(), Some("http://client/faults"));
    // two FaultTo headers are refused
    let two = r#"<a:FaultTo><a:Address>http://a/</a:Address></a:FaultTo><a:FaultTo><a:Address>http://b/</a:Address></a:FaultTo>"#;
    let e = decode(
        request("http://www.w3.org/2003/05/soap-envelope", two),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(matches!(
        e.kind(),
        DecodeErrorKind::InvalidAddressingHeader {
            header: "FaultTo",
            ..
        }
    ));
}
