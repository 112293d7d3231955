//! Helpers shared by the integration tests.
#![allow(dead_code)]

use wsrm_proto::msg::Message;
use wsrm_wire::{decode, encode, AddressingVersion, Decoded, Framing, Limits};

/// Encodes `d.message` with the framing `d` was received in and decodes it again; returns
/// the re-decoded result.
pub fn reencode(d: &Decoded) -> Decoded {
    let mut framing = Framing::new(d.soap, d.addressing);
    framing.xml_lang = "en-US".into();
    framing.body_namespaces = d.body_namespaces.clone();
    let bytes = encode(&d.message, &framing).expect("encode");
    match decode(bytes.clone(), &Limits::default()) {
        Ok(x) => x,
        Err(e) => panic!("re-decode failed: {e}\n{}", String::from_utf8_lossy(&bytes)),
    }
}

/// `m` with the normalisations the writer applies (WCF omits an anonymous To under WSA 1.0).
pub fn normalized(m: &Message, addressing: AddressingVersion) -> Message {
    let mut m = m.clone();
    if addressing == AddressingVersion::Wsa10
        && m.to.as_deref() == Some(AddressingVersion::Wsa10.anonymous())
    {
        m.to = None;
    }
    m
}

/// An acknowledgement header for RM version `v` from the given parts: ranges, or (when there
/// are none) sometimes Nacks instead, `Final` only in 1.1 and never with Nacks.
pub fn ack_header(
    v: wsrm_proto::msg::RmVersion,
    id: impl proptest::strategy::Strategy<Value = wsrm_proto::msg::SequenceId>,
    ranges: impl proptest::strategy::Strategy<Value = Vec<(u64, u64)>>,
    buffer_remaining: impl proptest::strategy::Strategy<Value = Option<u32>>,
    nacks: impl proptest::strategy::Strategy<Value = Vec<u64>>,
) -> impl proptest::strategy::Strategy<Value = wsrm_proto::msg::AckHeader> {
    use proptest::prelude::*;
    (
        id,
        ranges,
        any::<bool>(),
        buffer_remaining,
        nacks,
        any::<bool>(),
    )
        .prop_map(
            move |(identifier, ranges, final_ack, buffer_remaining, nacks, use_nacks)| {
                let use_nacks = use_nacks && ranges.is_empty();
                wsrm_proto::msg::AckHeader {
                    identifier,
                    none: ranges.is_empty() && !use_nacks,
                    final_ack: final_ack && v == wsrm_proto::msg::RmVersion::Wsrm11 && !use_nacks,
                    nacks: if use_nacks { nacks } else { Vec::new() },
                    ranges,
                    buffer_remaining,
                }
            },
        )
}

/// The default limits, or the defaults with one limit small (near what the hot envelopes need);
/// a small message-size limit starts at `min_size` bytes.
pub fn one_small_limit(min_size: usize) -> impl proptest::strategy::Strategy<Value = Limits> {
    use proptest::strategy::Strategy;
    (0..9u8, 0..130usize).prop_map(move |(which, n)| {
        let mut l = Limits::default();
        match which {
            0 => l.max_depth = n % 7,
            1 => l.max_headers = n % 8,
            2 => l.max_attributes = n % 4,
            3 => l.max_attributes_len = n,
            4 => l.max_name_len = n % 40,
            5 => l.max_text_len = n % 70,
            6 => l.max_ack_ranges = n % 6,
            7 => l.max_message_size = min_size + n * 8,
            _ => {}
        }
        l
    })
}

/// The number of cases a property test runs: `default`, or `PROPTEST_CASES` when that is set
/// (a test's own `ProptestConfig` would otherwise override the variable), so that a deeper
/// search can be run by hand, e.g. `PROPTEST_CASES=100000 cargo test --release --test NAME`.
/// An unreadable value is an error, not a silent default.
pub fn cases(default: u32) -> u32 {
    match std::env::var("PROPTEST_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("PROPTEST_CASES={v:?} is not a number of cases")),
        Err(_) => default,
    }
}
