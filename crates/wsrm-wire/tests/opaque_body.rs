//! The application body is opaque: it is returned as a zero-copy slice of the input and only
//! its structure is checked (tags nest and match, comments/CDATA/PIs/DOCTYPE handled as
//! everywhere, depth/name/tag limits). What it contains is not interpreted.

use bytes::Bytes;
use wsrm_proto::msg::Body;
use wsrm_wire::{decode, DecodeErrorKind, LimitKind, Limits};

fn env(body: &str) -> Bytes {
    Bytes::from(format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">http://tempuri.org/X</a:Action></s:Header><s:Body>{body}</s:Body></s:Envelope>"#
    ))
}

fn app_body(body: &str) -> Bytes {
    let input = env(body);
    let d = decode(input.clone(), &Limits::default()).unwrap_or_else(|e| panic!("{body}: {e}"));
    let b = match d.message.body {
        Body::Application(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(b, d.body_bytes);
    // zero-copy: the body points into the input
    let at = b.as_ptr() as usize - input.as_ptr() as usize;
    assert_eq!(&input[at..at + b.len()], &b[..]);
    b
}

fn xml_error(body: &str) -> String {
    match decode(env(body), &Limits::default()) {
        Err(e) => match e.kind() {
            DecodeErrorKind::Xml { reason, .. } => reason.clone(),
            DecodeErrorKind::Doctype { .. } => "doctype".into(),
            other => panic!("{body}: {other:?}"),
        },
        Ok(d) => panic!("{body}: accepted as {:?}", d.message.body),
    }
}

#[test]
fn body_bytes_are_the_exact_content() {
    for body in [
        r#"<X xmlns="urn:x"><Y a="1" b='2'>t</Y><Y/></X>"#,
        // nested elements with the envelope's own names
        r#"<s:Body><s:Body>x</s:Body></s:Body><s:Envelope/>"#,
        // markup-like text inside comments, CDATA and attribute values
        r#"<X xmlns="urn:x"><!-- </s:Body> --><![CDATA[</s:Body><]]><Y v="a>b</s:Body>"/></X>"#,
        // siblings, whitespace and text between them
        "<A xmlns=\"urn:a\"/>\n  <B xmlns=\"urn:b\">1 &lt; 2</B> ",
        // below the first element (resolved: it decides the body kind) attributes and
        // prefixes are not interpreted: a prefix declared nowhere
        r#"<X xmlns="urn:x"><p:Y q:a="1">&amp;&#x41;</p:Y></X>"#,
    ] {
        assert_eq!(&app_body(body)[..], body.as_bytes(), "{body}");
    }
}

#[test]
fn body_structure_errors_are_refused() {
    for (body, want) in [
        ("<X><Y></X></Y>", "does not match"),
        ("<X>", "does not match"),
        ("<X><!-- open </X>", "comment"),
        ("<X><![CDATA[ open </X>", "CDATA"),
        ("<X><?pi x?></X>", "processing instruction"),
        ("<X></X></Y>", "does not match"),
        ("<X><1bad/></X>", "malformed element name"),
        ("<X><a:b:c/></X>", "malformed element name"),
        ("<X><Y a=\"1></Y></X>", "truncated"),
        ("<X>&lol;</X>", "entity reference"),
        ("<X>&#0;</X>", "character reference"),
        ("<X>& </X>", "unterminated reference"),
    ] {
        let reason = xml_error(body);
        assert!(reason.contains(want), "{body}: {reason}");
    }
    assert_eq!(xml_error("<X><!DOCTYPE x></X>"), "doctype");
}

#[test]
fn body_limits_hold() {
    let deep = "<d>".repeat(40) + &"</d>".repeat(40);
    match decode(env(&deep), &Limits::default()).unwrap_err().kind() {
        DecodeErrorKind::LimitExceeded { what, limit, .. } => {
            assert_eq!(*what, LimitKind::Depth);
            assert_eq!(*limit, 32);
        }
        other => panic!("{other:?}"),
    }
    // nesting within the limit (Envelope, Body and 30 levels = 32)
    let ok = "<d>".repeat(30) + &"</d>".repeat(30);
    app_body(&ok);
    let long_name = format!("<{}/>", "n".repeat(300));
    match decode(env(&long_name), &Limits::default())
        .unwrap_err()
        .kind()
    {
        DecodeErrorKind::LimitExceeded { what, .. } => assert_eq!(*what, LimitKind::NameLength),
        other => panic!("{other:?}"),
    }
    let long_tag = format!("<X a=\"{}\"/>", "v".repeat(9000));
    let limits = Limits {
        max_message_size: 1 << 20,
        ..Limits::default()
    };
    match decode(env(&long_tag), &limits).unwrap_err().kind() {
        DecodeErrorKind::LimitExceeded { what, .. } => {
            assert_eq!(*what, LimitKind::AttributesLength)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_2_mb_body_is_skipped_in_one_pass() {
    let limits = Limits {
        max_message_size: 4 << 20,
        ..Limits::default()
    };
    let body = format!(
        "<X xmlns=\"urn:x\">{}</X>",
        "<i>payload</i>".repeat(150_000)
    );
    let d = decode(env(&body), &limits).unwrap();
    assert_eq!(d.body_bytes.len(), body.len());
}
