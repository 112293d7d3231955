//! `AckTemplate::decode` gives exactly what `decode` gives (the same `Decoded`, or the same
//! error) whenever it gives anything (and `AckTemplate::decode_ack` the same reduced to the
//! acknowledgement header), and it gives something for every standalone
//! acknowledgement the writer writes for the template's sequence and versions: checked on
//! generated acknowledgements in every version, and on substituted, mutated, truncated and
//! extended ones, for templates of the same and of other identifiers and versions, under
//! default and small limits.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use wsrm_proto::msg::{AckHeader, Action, Body, Message, RmVersion, SequenceId};
use wsrm_wire::{decode, encode, AckTemplate, AddressingVersion, Framing, Limits, SoapVersion};

const SOAPS: [SoapVersion; 2] = [SoapVersion::Soap11, SoapVersion::Soap12];
const WSAS: [AddressingVersion; 2] = [AddressingVersion::Wsa10, AddressingVersion::Wsa200408];
const RMS: [RmVersion; 2] = [RmVersion::Wsrm10, RmVersion::Wsrm11];

/// Identifiers the template reads as they are, of various lengths.
fn plain_ids() -> Vec<String> {
    vec![
        "a".to_string(),
        "urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b".to_string(),
        "urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9c".to_string(),
        "urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9".to_string(),
        "x y\"z'".to_string(),
        format!("urn:{}", "k".repeat(95)),
        format!("urn:{}", "q".repeat(8_000)),
    ]
}

/// Identifiers the writer escapes, or that the reader trims, or not ASCII.
fn other_ids() -> Vec<String> {
    ["a&b", "a<b", "a>b", " a", "a ", "é", "a\tb"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn range_sets() -> Vec<Vec<(u64, u64)>> {
    vec![
        vec![],
        vec![(1, 1)],
        vec![(1, 3), (5, 9)],
        (1..=10).map(|k| (3 * k, 3 * k + 1)).collect(),
        (1..=129).map(|k| (2 * k, 2 * k)).collect(),
        vec![(1, 999_999_999_999_999_999)],
    ]
}

#[allow(clippy::too_many_arguments)]
fn ack(
    soap: SoapVersion,
    wsa: AddressingVersion,
    v: RmVersion,
    id: &str,
    ranges: Vec<(u64, u64)>,
    buffer_remaining: Option<u32>,
    final_ack: bool,
    relates_to: Option<&str>,
    to: Option<&str>,
) -> Bytes {
    let mut m = Message::new(v, Action::SequenceAcknowledgement, Body::Empty);
    m.ack = Some(AckHeader {
        identifier: SequenceId::from(id),
        none: ranges.is_empty(),
        ranges,
        final_ack: final_ack && v == RmVersion::Wsrm11,
        nacks: Vec::new(),
        buffer_remaining,
    });
    m.relates_to = relates_to.map(Arc::from);
    m.to = to.map(Arc::from);
    encode(&m, &Framing::new(soap, wsa)).unwrap_or_else(|e| panic!("{e}"))
}

/// The optional parts: BufferRemaining, Final, RelatesTo, To.
type Tail = (
    Option<u32>,
    bool,
    Option<&'static str>,
    Option<&'static str>,
);
const TAILS: [Tail; 6] = [
    (None, false, None, None),
    (Some(0), false, None, None),
    (Some(2_147_483_647), true, None, None),
    (None, true, Some("urn:uuid:r"), None),
    (Some(9), false, Some(" r "), Some("http://h:1/svc")),
    (
        None,
        false,
        None,
        Some("http://www.w3.org/2005/08/addressing/anonymous"),
    ),
];

fn small_limits() -> Vec<Limits> {
    let mut out = vec![Limits::default()];
    for n in [0, 300, 400, 500, 2_000] {
        out.push(Limits {
            max_message_size: n,
            ..Limits::default()
        });
    }
    for n in [0, 1, 2, 3, 4, 8] {
        out.push(Limits {
            max_ack_ranges: n,
            ..Limits::default()
        });
    }
    for n in [0, 1, 2, 3] {
        out.push(Limits {
            max_headers: n,
            ..Limits::default()
        });
    }
    for n in [1, 44, 45, 46, 67, 68, 69, 99, 100] {
        out.push(Limits {
            max_text_len: n,
            ..Limits::default()
        });
    }
    for n in [3, 4] {
        out.push(Limits {
            max_depth: n,
            ..Limits::default()
        });
    }
    for n in [31, 32] {
        out.push(Limits {
            max_name_len: n,
            ..Limits::default()
        });
    }
    for n in [1, 2] {
        out.push(Limits {
            max_attributes: n,
            ..Limits::default()
        });
    }
    for n in [127, 128] {
        out.push(Limits {
            max_attributes_len: n,
            ..Limits::default()
        });
    }
    out
}

/// `t.decode_ack(b)` is `t.decode(b)` reduced to the acknowledgement header.
fn ack_agrees(t: &AckTemplate, b: &[u8], limits: &Limits) -> Result<(), String> {
    let full = t.decode(b, limits);
    let header = t.decode_ack(b, limits);
    let reduced = full
        .clone()
        .map(|r| r.map(|d| d.message.ack.expect("a standalone acknowledgement")));
    if header == reduced {
        Ok(())
    } else {
        Err(format!(
            "decode_ack: {header:?}\ndecode: {full:?}\ninput: {}",
            String::from_utf8_lossy(b)
        ))
    }
}

/// `t.decode(b)` is `None` or `decode(b)` (and `t.decode_ack(b)` the same reduced to the
/// acknowledgement header); whether it was `Some`.
fn agrees(t: &AckTemplate, b: &[u8], limits: &Limits) -> Result<bool, String> {
    ack_agrees(t, b, limits)?;
    match t.decode(b, limits) {
        None => Ok(false),
        Some(got) => {
            let want = decode(Bytes::copy_from_slice(b), limits);
            if got == want {
                Ok(true)
            } else {
                Err(format!(
                    "template: {got:?}\ndecode: {want:?}\nlimits: {limits:?}\ninput: {}",
                    String::from_utf8_lossy(b)
                ))
            }
        }
    }
}

fn check(t: &AckTemplate, b: &[u8], limits: &Limits) -> bool {
    agrees(t, b, limits).unwrap_or_else(|e| panic!("{e}"))
}

/// Every generated acknowledgement decodes through the template of its sequence and versions,
/// to what `decode` gives, sharing the template's identifier; the templates of other
/// identifiers and versions do not take it; under small limits the template gives `None` or
/// the same.
#[test]
fn writer_acknowledgements_decode_through_their_template() {
    let limits = small_limits();
    let mut taken = 0usize;
    for soap in SOAPS {
        for wsa in WSAS {
            for v in RMS {
                for id in plain_ids() {
                    let sid = SequenceId::from(id.as_str());
                    let t = AckTemplate::new(soap, wsa, v, &sid);
                    for ranges in range_sets() {
                        for (br, fin, rel, to) in TAILS {
                            let b = ack(soap, wsa, v, &id, ranges.clone(), br, fin, rel, to);
                            let got = t.decode(&b, &Limits::default());
                            let want = decode(b.clone(), &Limits::default());
                            if let Err(e) = ack_agrees(&t, &b, &Limits::default()) {
                                panic!("{e}");
                            }
                            // 129 ranges: over the default limit, and left to `decode`
                            if ranges.len() > 128 {
                                assert!(got.is_none());
                            } else {
                                assert_eq!(
                                    got.as_ref(),
                                    Some(&want),
                                    "{}",
                                    String::from_utf8_lossy(&b)
                                );
                            }
                            if let Some(Ok(d)) = got {
                                let a = d.message.ack.unwrap_or_default();
                                // the template's identifier, not a copy
                                assert!(std::ptr::eq(
                                    a.identifier.as_str().as_ptr(),
                                    sid.as_str().as_ptr()
                                ));
                                taken += 1;
                            }
                            for l in &limits {
                                check(&t, &b, l);
                            }
                            // templates of other versions and identifiers
                            for (s2, w2, v2) in [
                                (soap, wsa, if v == RMS[0] { RMS[1] } else { RMS[0] }),
                                (soap, if wsa == WSAS[0] { WSAS[1] } else { WSAS[0] }, v),
                                (if soap == SOAPS[0] { SOAPS[1] } else { SOAPS[0] }, wsa, v),
                            ] {
                                let other = AckTemplate::new(s2, w2, v2, &sid);
                                assert!(other.decode(&b, &Limits::default()).is_none());
                            }
                            for other in plain_ids() {
                                if other != id {
                                    let o = AckTemplate::new(soap, wsa, v, &other.as_str().into());
                                    assert!(o.decode(&b, &Limits::default()).is_none());
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(taken, 8 * 7 * 5 * 6, "{taken}");
}

/// Identifiers the writer escapes or the reader trims: the template takes nothing written by
/// the writer; the bytes that spell its identifier unescaped it takes only as `decode` reads
/// them.
#[test]
fn identifiers_not_read_as_they_are_give_none() {
    for id in other_ids() {
        for v in RMS {
            let t = AckTemplate::new(
                SoapVersion::Soap12,
                AddressingVersion::Wsa10,
                v,
                &id.as_str().into(),
            );
            let written = |id: &str| {
                ack(
                    SoapVersion::Soap12,
                    AddressingVersion::Wsa10,
                    v,
                    id,
                    vec![(1, 2)],
                    None,
                    false,
                    None,
                    None,
                )
            };
            let b = written(&id);
            assert!(t.decode(&b, &Limits::default()).is_none(), "{id:?}");
            let raw = String::from_utf8_lossy(&written("PLACEHOLDER")).replace("PLACEHOLDER", &id);
            for l in small_limits() {
                check(&t, raw.as_bytes(), &l);
            }
        }
    }
}

/// Every byte of a few acknowledgements replaced (by bytes that matter to the reader),
/// deleted, duplicated; every truncation; trailing bytes; every substitution below at every
/// place: the template gives `None` or what `decode` gives.
#[test]
fn every_single_byte_mutation_agrees() {
    let id = "urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b";
    let sid = SequenceId::from(id);
    let bases = [
        (RmVersion::Wsrm10, vec![(1, 3), (5, 9)], TAILS[4]),
        (RmVersion::Wsrm10, vec![], TAILS[0]),
        (RmVersion::Wsrm11, vec![(2, 2)], TAILS[2]),
        (RmVersion::Wsrm11, vec![], TAILS[3]),
    ];
    let mut checked = 0usize;
    for (v, ranges, (br, fin, rel, to)) in bases {
        let (soap, wsa) = (SoapVersion::Soap12, AddressingVersion::Wsa10);
        let t = AckTemplate::new(soap, wsa, v, &sid);
        let b = ack(soap, wsa, v, id, ranges, br, fin, rel, to).to_vec();
        let mut variants = Vec::new();
        for at in 0..b.len() {
            for x in [b' ', b'<', b'>', b'"', b'&', b'0', b'9', b'a', 0x01, 0xC3] {
                if b[at] != x {
                    let mut m = b.clone();
                    m[at] = x;
                    variants.push(m);
                }
            }
            let mut m = b.clone();
            m.remove(at);
            variants.push(m);
            let mut m = b.clone();
            m.insert(at, b[at]);
            variants.push(m);
            variants.push(b[..at].to_vec());
        }
        for tail in [&b" "[..], b"\n", b"<", b"</s:Envelope>", b"\0"] {
            variants.push([&b[..], tail].concat());
        }
        let text = String::from_utf8_lossy(&b).into_owned();
        for (from, to) in SUBSTITUTIONS {
            for (at, _) in text.match_indices(from) {
                let mut s = text.clone();
                s.replace_range(at..at + from.len(), to);
                variants.push(s.into_bytes());
            }
        }
        for m in &variants {
            check(&t, m, &Limits::default());
            checked += 1;
        }
    }
    assert!(checked > 25_000, "{checked}");
}

/// Replacements that keep the envelope well-formed, or nearly: other numbers, other
/// whitespace, other order, other prefixes, other identifiers.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("Lower=\"1\"", "Lower=\"01\""),
    ("Lower=\"1\"", "Lower=\"0\""),
    ("Upper=\"3\"", "Upper=\" 3\""),
    ("Upper=\"9\"", "Upper=\"4\""),
    ("Lower=\"5\"", "Lower=\"3\""),
    ("Lower=\"2\"", "Lower=\"+2\""),
    ("\"/>", "\" />"),
    ("<r:", "<m:"),
    ("<r:Final/>", "<r:Final></r:Final>"),
    ("<r:None/>", ""),
    (
        "<r:None/>",
        "<r:AcknowledgementRange Lower=\"1\" Upper=\"1\"/>",
    ),
    (">9<", ">09<"),
    (">9<", ">2147483648<"),
    (">2147483647<", ">-1<"),
    (">0<", "> 0<"),
    ("</r:Identifier>", "</r:Identifier> "),
    (
        "</r:Identifier>",
        "</r:Identifier><r:Identifier>x</r:Identifier>",
    ),
    ("fc9b<", "fc9b <"),
    ("fc9b<", "fc9<"),
    ("fc9b<", "fc9bb<"),
    ("urn:uuid:r<", "urn:uuid:&amp;<"),
    ("<a:RelatesTo>", "<a:RelatesTo RelationshipType=\"x\">"),
    ("svc<", "svc&#x41;<"),
    ("</s:Header>", "<a:MessageID>urn:m</a:MessageID></s:Header>"),
    ("<s:Body/>", "<s:Body></s:Body>"),
    ("mustUnderstand=\"1\"", "mustUnderstand=\"true\""),
    (
        "SequenceAcknowledgement</a:Action>",
        "AckRequested</a:Action>",
    ),
];

fn limits() -> impl Strategy<Value = Limits> {
    common::one_small_limit(300)
}

fn any_ack() -> impl Strategy<Value = (SoapVersion, AddressingVersion, RmVersion, String, Bytes)> {
    (
        0..8usize,
        prop_oneof![
            3 => "[a-z0-9:/.-]{1,60}",
            1 => "[ -~]{0,12}",
            1 => any::<u128>().prop_map(|u| format!("urn:uuid:{u:032x}")),
        ],
        proptest::collection::vec((1..20u64, 0..20u64), 0..12),
        0..TAILS.len(),
    )
        .prop_map(|(vs, id, gaps, tail)| {
            let (soap, wsa, v) = (SOAPS[vs & 1], WSAS[(vs >> 1) & 1], RMS[vs >> 2]);
            let mut ranges = Vec::new();
            let mut next = 1u64;
            for (gap, len) in gaps {
                let lo = next + gap - 1;
                ranges.push((lo, lo + len));
                next = lo + len + 2;
            }
            let (br, fin, rel, to) = TAILS[tail];
            let b = ack(soap, wsa, v, &id, ranges, br, fin, rel, to);
            (soap, wsa, v, id, b)
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize, usize),
    Truncate(usize),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        Just(b' '),
        Just(b'<'),
        Just(b'"'),
        Just(b'&'),
        Just(b'0'),
        Just(b'9'),
        any::<u8>()
    ];
    prop_oneof![
        3 => (any::<usize>(), byte.clone()).prop_map(|(a, b)| Mutation::Replace(a, b)),
        2 => (any::<usize>(), byte).prop_map(|(a, b)| Mutation::Insert(a, b)),
        1 => (any::<usize>(), 1..8usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..4).prop_map(Mutation::Append),
    ]
}

fn apply(b: &mut Vec<u8>, m: &Mutation) {
    let len = b.len().max(1);
    match m {
        Mutation::Replace(a, x) => {
            if let Some(c) = b.get_mut(a % len) {
                *c = *x;
            }
        }
        Mutation::Insert(a, x) => b.insert(a % (b.len() + 1), *x),
        Mutation::Delete(a, n) => {
            let a = a % len;
            let end = (a + n).min(b.len());
            if a < end {
                b.drain(a..end);
            }
        }
        Mutation::Truncate(a) => b.truncate(a % len),
        Mutation::Append(t) => b.extend_from_slice(t),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::cases(4096), .. ProptestConfig::default() })]

    /// Generated acknowledgements (any identifier the strategy makes) through their own
    /// template: `Some` under the default limits if the identifier is one the template reads
    /// as it is, and always what `decode` gives.
    #[test]
    fn generated_acks_agree((soap, wsa, v, id, b) in any_ack(), limits in limits()) {
        let t = AckTemplate::new(soap, wsa, v, &id.as_str().into());
        let plain = !id.is_empty()
            && id.bytes().all(|c| (0x20..0x7f).contains(&c) && !b"&<>".contains(&c))
            && !id.starts_with(' ')
            && !id.ends_with(' ');
        let taken = agrees(&t, &b, &Limits::default()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(taken, plain, "{}", String::from_utf8_lossy(&b));
        agrees(&t, &b, &limits).map_err(TestCaseError::fail)?;
    }

    /// Mutated acknowledgements through the template of the original.
    #[test]
    fn mutated_acks_agree(
        (soap, wsa, v, id, b) in any_ack(),
        mutations in proptest::collection::vec(mutation(), 1..4),
        limits in limits(),
    ) {
        let t = AckTemplate::new(soap, wsa, v, &id.as_str().into());
        let mut b = b.to_vec();
        for m in &mutations {
            apply(&mut b, m);
        }
        agrees(&t, &b, &limits).map_err(TestCaseError::fail)?;
        agrees(&t, &b, &Limits::default()).map_err(TestCaseError::fail)?;
    }
}
