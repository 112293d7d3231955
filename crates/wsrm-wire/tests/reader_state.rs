//! The reader's inline stacks (namespace bindings, open elements) past their inline capacity,
//! namespace URIs with references, the attributes kept from the tokenizer, and the opaque
//! body's end tags: same results as the straightforward reading.

use bytes::Bytes;
use wsrm_proto::msg::Action;
use wsrm_wire::{decode, DecodeErrorKind, Limits};

const ENV: &str = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing">"#;

fn dec(xml: &str) -> Result<wsrm_wire::Decoded, wsrm_wire::DecodeError> {
    decode(Bytes::from(xml.to_owned()), &Limits::default())
}

/// `n` nested elements in a reference parameter, each declaring two prefixes (more bindings
/// and open elements than the reader keeps inline).
fn deep_param(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            r#"<p{i}:E xmlns:p{i}="urn:p{i}" xmlns:q{i}="urn:q{i}" q{i}:k="v">"#
        ));
    }
    for i in (0..n).rev() {
        s.push_str(&format!("</p{i}:E>"));
    }
    s
}

#[test]
fn deep_headers_spill_and_unwind_the_stacks() {
    let param = deep_param(24);
    let xml = format!(
        r#"{ENV}<s:Header><a:Action s:mustUnderstand="1">urn:op</a:Action><a:ReplyTo><a:Address>http://c.example/x</a:Address><a:ReferenceParameters>{param}</a:ReferenceParameters></a:ReplyTo><r:Sequence s:mustUnderstand="1" xmlns:r="http://schemas.xmlsoap.org/ws/2005/02/rm"><r:Identifier>urn:s</r:Identifier><r:MessageNumber>3</r:MessageNumber></r:Sequence><a:To s:mustUnderstand="1">http://svc.example/</a:To></s:Header><s:Body><x:B xmlns:x="urn:x"><x:C/></x:B></s:Body></s:Envelope>"#
    );
    let d = dec(&xml).expect("decode");
    let rt = d.reply_to.as_ref().expect("ReplyTo");
    assert_eq!(&*rt.address, "http://c.example/x");
    assert_eq!(rt.reference_parameters.len(), 1);
    assert_eq!(&rt.reference_parameters[0][..], param.as_bytes());
    let seq = d.message.sequence.as_ref().expect("Sequence");
    assert_eq!(seq.identifier.as_str(), "urn:s");
    assert_eq!(seq.number, 3);
    assert_eq!(d.message.to.as_deref(), Some("http://svc.example/"));
    // nothing declared inside the headers is in scope at the body
    assert!(d.body_namespaces.is_empty(), "{:?}", d.body_namespaces);
    assert_eq!(&d.body_bytes[..], br#"<x:B xmlns:x="urn:x"><x:C/></x:B>"#);
}

#[test]
fn deep_mismatched_end_tag_is_refused() {
    let mut param = deep_param(20);
    param = param.replacen("</p3:E>", "</p4:E>", 1);
    let xml = format!(
        r#"{ENV}<s:Header><a:Action>urn:op</a:Action><a:ReplyTo><a:Address>http://c.example/x</a:Address><a:ReferenceParameters>{param}</a:ReferenceParameters></a:ReplyTo></s:Header><s:Body/></s:Envelope>"#
    );
    assert!(dec(&xml).is_err());
}

#[test]
fn namespace_uri_with_references_is_resolved() {
    // `&#x72;` = `r`: the RM 1.0 namespace, written with a character reference
    let xml = format!(
        r#"{ENV}<s:Header><a:Action>urn:op</a:Action><r:Sequence xmlns:r="http://schemas.xmlsoap.org/ws/2005/02/&#x72;m"><r:Identifier>urn:s</r:Identifier><r:MessageNumber>1</r:MessageNumber></r:Sequence></s:Header><s:Body xmlns:b="urn:a&amp;b"><b:X/></s:Body></s:Envelope>"#
    );
    let d = dec(&xml).expect("decode");
    assert_eq!(d.message.sequence.as_ref().map(|s| s.number), Some(1));
    assert_eq!(
        d.body_namespaces,
        vec![("b".to_string(), "urn:a&b".to_string())]
    );
}

#[test]
fn attributes_of_headers_are_read_as_written() {
    // mustUnderstand="0" and a role that is not ours: the unknown header is ignored / skipped
    let xml = format!(
        r#"{ENV}<s:Header><a:Action s:mustUnderstand=" true ">http://schemas.xmlsoap.org/ws/2005/02/rm/SequenceAcknowledgement</a:Action><x:H xmlns:x="urn:x" s:mustUnderstand="0">1</x:H><x:H xmlns:x="urn:x" s:mustUnderstand="1" s:role="urn:other">1</x:H><r:SequenceAcknowledgement xmlns:r="http://schemas.xmlsoap.org/ws/2005/02/rm"><r:Identifier>urn:s</r:Identifier><r:AcknowledgementRange Upper="9" Lower="2"/><r:AcknowledgementRange Lower=" 11 " Upper="12" x:e="1" xmlns:x="urn:x"/></r:SequenceAcknowledgement></s:Header><s:Body/></s:Envelope>"#
    );
    let d = dec(&xml).expect("decode");
    assert_eq!(d.message.action, Action::SequenceAcknowledgement);
    let ack = d.message.ack.as_ref().expect("ack");
    assert_eq!(ack.ranges, vec![(2, 9), (11, 12)]);
    // an understood-but-refused mustUnderstand header still fails
    let xml = format!(
        r#"{ENV}<s:Header><a:Action>urn:op</a:Action><x:H xmlns:x="urn:x" s:mustUnderstand="1">1</x:H></s:Header><s:Body/></s:Envelope>"#
    );
    match dec(&xml) {
        Err(e) => assert!(
            matches!(e.kind(), DecodeErrorKind::MustUnderstand { .. }),
            "{e}"
        ),
        Ok(_) => panic!("decoded"),
    }
    let xml = format!(
        r#"{ENV}<s:Header><a:Action s:mustUnderstand="2">urn:op</a:Action></s:Header><s:Body/></s:Envelope>"#
    );
    assert!(dec(&xml).is_err());
}

#[test]
fn opaque_body_end_tags() {
    for (body, ok) in [
        ("<a><b>1</b><c><d/></c></a>", true),
        ("<a><b>1</c></b></a>", false),
        ("<a><b>1</b></a><e/>", true),
        ("<a><b>1</b>", false),
        // prefixes inside the opaque body are not interpreted (as before)
        ("<a xmlns:p='urn:p'><p:b/></a><p:c/>", true),
    ] {
        let xml = format!(
            r#"{ENV}<s:Header><a:Action>urn:op</a:Action></s:Header><s:Body>{body}</s:Body></s:Envelope>"#
        );
        let r = dec(&xml);
        assert_eq!(r.is_ok(), ok, "{body}: {:?}", r.err());
        if let Ok(d) = r {
            assert_eq!(&d.body_bytes[..], body.as_bytes());
        }
    }
}

/// The declarations the body may rely on: `s`/`a` are left out only when bound exactly as the
/// writer binds them (the envelope's SOAP namespace, the message's WS-Addressing namespace,
/// also when written with references); anything else is listed.
#[test]
fn body_namespaces_leave_out_only_the_writer_s_bindings() {
    const S12: &str = "http://www.w3.org/2003/05/soap-envelope";
    const W10: &str = "http://www.w3.org/2005/08/addressing";
    const W04: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
    type Case = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
    );
    let cases: [Case; 7] = [
        // the writer's: nothing
        (
            r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing""#,
            "a",
            &[],
        ),
        // `a` written with a character reference: the same URI
        (
            r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://&#x77;ww.w3.org/2005/08/addressing""#,
            "a",
            &[],
        ),
        // `a` bound to the other WS-Addressing version than the headers use
        (
            r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://www.w3.org/2005/08/addressing""#,
            "w",
            &[("a", W04), ("w", W10)],
        ),
        // `a` unused by the headers, bound to something else
        (
            r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="urn:a" xmlns:w="http://www.w3.org/2005/08/addressing""#,
            "w",
            &[("a", "urn:a"), ("w", W10)],
        ),
        // another prefix for the envelope, and `s` for something else
        (
            r#"xmlns:e="http://www.w3.org/2003/05/soap-envelope" xmlns:s="urn:s" xmlns:a="http://www.w3.org/2005/08/addressing""#,
            "a",
            &[("e", S12), ("s", "urn:s")],
        ),
        // a default namespace
        (
            r#"xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing" xmlns="urn:d""#,
            "a",
            &[("", "urn:d")],
        ),
        // `s` bound to the addressing namespace (the envelope under another prefix)
        (
            r#"xmlns:e="http://www.w3.org/2003/05/soap-envelope" xmlns:s="http://www.w3.org/2005/08/addressing" xmlns:a="http://www.w3.org/2005/08/addressing""#,
            "a",
            &[("e", S12), ("s", W10)],
        ),
    ];
    for (decls, wsa, want) in cases {
        let env = if decls.contains("xmlns:e=") { "e" } else { "s" };
        let xml = format!(
            r#"<{env}:Envelope {decls}><{env}:Header><{wsa}:Action>urn:op</{wsa}:Action></{env}:Header><{env}:Body><p xmlns="urn:p"/></{env}:Body></{env}:Envelope>"#
        );
        let d = dec(&xml).unwrap_or_else(|e| panic!("{xml}: {e}"));
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(p, u)| (p.to_string(), u.to_string()))
            .collect();
        assert_eq!(d.body_namespaces, want, "{xml}");
    }
}
