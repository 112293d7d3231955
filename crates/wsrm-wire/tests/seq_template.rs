//! `SequenceTemplate::encode` writes exactly what `encode` writes for every message of the
//! template's shape (checked on generated messages in every version and framing, with numbers
//! of every length and arbitrary bodies), and gives `None` for every message of another shape
//! (another sequence, action, `To` or RM version, a LastMessage, any other header, a
//! non-application body); `SequenceTemplate::new` refuses what only the general writer writes.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use wsrm_proto::msg::{AckHeader, Action, Body, Message, RmVersion, SequenceHeader, SequenceId};
use wsrm_wire::{
    encode, AddressingVersion, Digits, Framing, SequencePieces, SequenceTemplate, SoapVersion,
};

const SOAPS: [SoapVersion; 2] = [SoapVersion::Soap11, SoapVersion::Soap12];
const WSAS: [AddressingVersion; 2] = [AddressingVersion::Wsa10, AddressingVersion::Wsa200408];
const RMS: [RmVersion; 2] = [RmVersion::Wsrm10, RmVersion::Wsrm11];

fn one_way(v: RmVersion, id: &str, action: &str, to: Option<&str>, n: u64, body: &[u8]) -> Message {
    let mut m = Message::new(
        v,
        Action::Other(Arc::from(action)),
        Body::Application(Bytes::copy_from_slice(body)),
    );
    m.sequence = Some(SequenceHeader {
        identifier: SequenceId::new(id),
        number: n,
        last_message: false,
    });
    m.to = to.map(Arc::from);
    m
}

/// Every framing the runtime uses, and one with a default `To`.
fn framings() -> Vec<Framing> {
    let mut v = Vec::new();
    for soap in SOAPS {
        for wsa in WSAS {
            v.push(Framing::new(soap, wsa));
            let mut with_to = Framing::new(soap, wsa);
            with_to.to = Some(Arc::from("http://example.com/default"));
            v.push(with_to);
        }
    }
    v
}

fn with_number(m: &Message, n: u64, body: &[u8]) -> Message {
    let mut m = m.clone();
    if let Some(s) = m.sequence.as_mut() {
        s.number = n;
    }
    m.body = Body::Application(Bytes::copy_from_slice(body));
    m
}

fn numbers() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..10,
        10u64..100_000_000,
        100_000_000u64..=i64::MAX as u64
    ]
}

fn bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"<p xmlns=\"urn:wsrm:payload\">message-1</p>".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..300),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Same shape: the template's bytes are the general writer's bytes.
    #[test]
    fn template_writes_what_encode_writes(
        f in 0usize..8,
        rm in 0usize..2,
        id in prop_oneof![
            Just("urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b".to_string()),
            "[a-zA-Z0-9:./-]{1,60}",
        ],
        action in prop_oneof![Just("urn:bench/OneWay".to_string()), "[a-z:/]{1,40}"],
        to in prop_oneof![
            Just(None),
            Just(Some("http://127.0.0.1:8080/svc".to_string())),
            Just(Some("http://www.w3.org/2005/08/addressing/anonymous".to_string())),
        ],
        first in numbers(),
        n in numbers(),
        body in bodies(),
    ) {
        let framing = &framings()[f];
        let m = one_way(RMS[rm], &id, &action, to.as_deref(), first, b"<first/>");
        let t = SequenceTemplate::new(&m, framing).expect("a one-way sequence message");
        let next = with_number(&m, n, &body);
        let want = encode(&next, framing).expect("encodes");
        prop_assert_eq!(t.encode(&next), Some(want.clone()));
        // the pieces are the same envelope
        let p = t.pieces(&next).expect("the template's shape");
        let mut joined = p.head.to_vec();
        joined.extend_from_slice(p.digits().as_bytes());
        joined.extend_from_slice(&p.tail);
        joined.extend_from_slice(&p.body);
        joined.extend_from_slice(SequencePieces::CLOSE);
        prop_assert_eq!(p.len(), want.len());
        prop_assert_eq!(&joined[..], &want[..]);
        // values equal to the template's but in other allocations match as well
        let mut copy = one_way(RMS[rm], &id, &action, to.as_deref(), n, &body);
        copy.version = next.version;
        prop_assert_eq!(t.encode(&copy), t.encode(&next));
    }
}

proptest! {
    /// `Digits` is the number's decimal text, at every width.
    #[test]
    fn digits_are_the_decimal_text(n in prop_oneof![any::<u64>(), 0u64..100_000, Just(u64::MAX)]) {
        let (d, want) = (Digits::of(n), n.to_string());
        prop_assert_eq!(d.as_bytes(), want.as_bytes());
    }
}

#[test]
fn digits_at_the_width_boundaries() {
    let mut p = 1u64;
    for _ in 0..20 {
        for n in [p - 1, p, p.saturating_add(1)] {
            assert_eq!(Digits::of(n).as_bytes(), n.to_string().as_bytes(), "{n}");
        }
        p = p.saturating_mul(10);
    }
    assert_eq!(Digits::of(u64::MAX).as_bytes(), b"18446744073709551615");
}

/// A message of another shape than the template's is not written from it.
#[test]
fn other_shapes_are_left_to_the_general_writer() {
    let id = "urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b";
    for framing in framings() {
        for v in RMS {
            let m = one_way(v, id, "urn:a", Some("http://h/svc"), 1, b"<b/>");
            let t = SequenceTemplate::new(&m, &framing).expect("template");
            let base = with_number(&m, 7, b"<c/>");
            assert!(t.encode(&base).is_some());

            let mut variants: Vec<(&str, Message)> = Vec::new();
            let mut x = base.clone();
            x.version = match v {
                RmVersion::Wsrm10 => RmVersion::Wsrm11,
                RmVersion::Wsrm11 => RmVersion::Wsrm10,
            };
            variants.push(("other RM version", x));
            let mut x = base.clone();
            if let Some(s) = x.sequence.as_mut() {
                s.identifier = SequenceId::new("urn:uuid:other");
            }
            variants.push(("other sequence", x));
            let mut x = base.clone();
            if let Some(s) = x.sequence.as_mut() {
                s.last_message = true;
            }
            variants.push(("LastMessage", x));
            let mut x = base.clone();
            x.action = Action::Other(Arc::from("urn:b"));
            variants.push(("other action", x));
            let mut x = base.clone();
            x.action = Action::LastMessage;
            variants.push(("RM action", x));
            let mut x = base.clone();
            x.to = Some(Arc::from("http://h/other"));
            variants.push(("other To", x));
            let mut x = base.clone();
            x.to = None;
            variants.push(("no To", x));
            let mut x = base.clone();
            x.message_id = Some(Arc::from("urn:uuid:m"));
            variants.push(("MessageID", x));
            let mut x = base.clone();
            x.relates_to = Some(Arc::from("urn:uuid:r"));
            variants.push(("RelatesTo", x));
            let mut x = base.clone();
            x.reply_to = Some(Arc::from("http://h/reply"));
            variants.push(("ReplyTo", x));
            let mut x = base.clone();
            x.ack_requested = Some(SequenceId::new(id));
            variants.push(("AckRequested", x));
            let mut x = base.clone();
            x.ack = Some(AckHeader {
                identifier: SequenceId::new("urn:uuid:offer"),
                ranges: vec![(1, 3)],
                none: false,
                nacks: Vec::new(),
                final_ack: false,
                buffer_remaining: None,
            });
            variants.push(("piggy-backed ack", x));
            let mut x = base.clone();
            x.body = Body::Empty;
            variants.push(("empty body", x));
            let mut x = base.clone();
            x.sequence = None;
            variants.push(("no Sequence", x));
            for (what, x) in variants {
                assert_eq!(t.encode(&x), None, "{what} ({framing:?}, {v:?})");
                assert!(t.pieces(&x).is_none(), "{what} ({framing:?}, {v:?})");
            }
        }
    }
}

/// Values the writer must escape, reference parameters and body namespaces are the general
/// writer's: no template is made for them.
#[test]
fn no_template_for_what_only_the_general_writer_writes() {
    let framing = Framing::soap12_wsa10();
    let ok = one_way(
        RmVersion::Wsrm10,
        "urn:x",
        "urn:a",
        Some("http://h/svc"),
        1,
        b"",
    );
    assert!(SequenceTemplate::new(&ok, &framing).is_some());
    for m in [
        one_way(
            RmVersion::Wsrm10,
            "urn:x&y",
            "urn:a",
            Some("http://h/svc"),
            1,
            b"",
        ),
        one_way(
            RmVersion::Wsrm10,
            "urn:x",
            "urn:a<b",
            Some("http://h/svc"),
            1,
            b"",
        ),
        one_way(
            RmVersion::Wsrm10,
            "urn:x",
            "urn:a",
            Some("http://h/svc?a=1&b=2"),
            1,
            b"",
        ),
    ] {
        assert!(SequenceTemplate::new(&m, &framing).is_none(), "{m:?}");
    }
    let mut with_params = framing.clone();
    with_params.reference_parameters = vec![Bytes::from_static(b"<k xmlns=\"urn:k\">1</k>")];
    assert!(SequenceTemplate::new(&ok, &with_params).is_none());
    let mut with_ns = framing.clone();
    with_ns.body_namespaces = vec![("p".to_string(), "urn:p".to_string())];
    assert!(SequenceTemplate::new(&ok, &with_ns).is_none());
    let mut request = ok.clone();
    request.message_id = Some(Arc::from("urn:uuid:m"));
    assert!(SequenceTemplate::new(&request, &framing).is_none());
    let mut last = ok.clone();
    if let Some(s) = last.sequence.as_mut() {
        s.last_message = true;
    }
    assert!(SequenceTemplate::new(&last, &framing).is_none());
}
