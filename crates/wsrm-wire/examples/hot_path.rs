//! Callgrind target for the four per-message codec operations of the runtime's hot path
//! (one-way reliable messages over HTTP, WS-RM 1.0, SOAP 1.2 + WS-Addressing 1.0, 1 KiB
//! bodies), each in its own non-inlined function so that `callgrind_annotate --inclusive=yes`
//! gives instructions per operation:
//!
//! ```sh
//! cargo build --release -p wsrm-wire --example hot_path
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/x.%p target/release/examples/hot_path 20000
//! callgrind_annotate --inclusive=yes /tmp/x.<pid> | grep hot_path::
//! ```
//!
//! The messages are built as the engine builds them (`wsrm-proto`'s `ClientSession` and
//! `Endpoint`) and encoded/decoded as `wsrm`'s `codec` module does: [`wsrm_wire::encode`]
//! (a fresh buffer per message) and [`wsrm_wire::decode`] of the received bytes.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use wsrm_proto::msg::{AckHeader, Action, Body, Message, RmVersion, SequenceHeader, SequenceId};
use wsrm_wire::{decode, encode, Decoded, Framing, Limits};

const SEQ: &str = "urn:uuid:8cf9383c-d191-47fc-a018-5d3da2c3fc9b";

/// A sequence message: Sequence, Action, MessageID, ReplyTo (anonymous), To, 1 KiB body,
/// optionally a piggy-backed acknowledgement.
fn sequence_message(number: u64, body: &Bytes, piggy_back: bool, seq: &SequenceId) -> Message {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::Other(Arc::from("urn:bench/OneWay")),
        Body::Application(body.clone()),
    );
    m.sequence = Some(SequenceHeader {
        identifier: seq.clone(),
        number,
        last_message: false,
    });
    m.message_id = Some(Arc::from("urn:uuid:4b7f3c12-9e0d-4f55-8a61-2d0c9b1e7f30"));
    m.reply_to = Some(Arc::from("http://www.w3.org/2005/08/addressing/anonymous"));
    m.to = Some(Arc::from("http://127.0.0.1:45237/svc"));
    if piggy_back {
        m.ack = Some(AckHeader {
            identifier: SequenceId::from("urn:uuid:2a9b6c1e-3f47-4d80-a1c5-7e8f90d2b364"),
            ranges: vec![(1, 41)],
            ..AckHeader::default()
        });
    }
    m
}

/// The standalone acknowledgement the service answers a request with.
fn ack_message(upper: u64, seq: &SequenceId) -> Message {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::SequenceAcknowledgement,
        Body::Empty,
    );
    m.ack = Some(AckHeader {
        identifier: seq.clone(),
        ranges: vec![(1, upper)],
        buffer_remaining: Some(7),
        ..AckHeader::default()
    });
    m
}

#[inline(never)]
fn encode_sequence(m: &Message, f: &Framing) -> Bytes {
    encode(m, f).expect("encode")
}

#[inline(never)]
fn decode_sequence(b: &Bytes, l: &Limits) -> Decoded {
    decode(b.clone(), l).expect("decode")
}

#[inline(never)]
fn encode_ack(m: &Message, f: &Framing) -> Bytes {
    encode(m, f).expect("encode")
}

#[inline(never)]
fn decode_ack(b: &Bytes, l: &Limits) -> Decoded {
    decode(b.clone(), l).expect("decode")
}

#[inline(never)]
fn drop_decoded(d: Decoded) {
    drop(d)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let piggy_back = std::env::args().nth(2).as_deref() == Some("piggy-back");
    let framing = Framing::new(
        wsrm_wire::SoapVersion::Soap12,
        wsrm_wire::AddressingVersion::Wsa10,
    );
    let limits = Limits {
        max_message_size: 65_536,
        ..Limits::default()
    };
    // the application body of the runtime benchmark (`crates/wsrm/examples/http_bench.rs`)
    let body = Bytes::from(format!(
        "<p xmlns=\"urn:wsrm:payload\">{}</p>",
        "x".repeat(1024 - 40)
    ));
    // HOT_PATH_SESSIONS=k: the messages of k sessions (sequence identifiers) interleaved, as
    // a runtime with k sessions sees them on one thread (default 1)
    let sessions: usize = std::env::var("HOT_PATH_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let ids: Vec<SequenceId> = (0..sessions)
        .map(|k| match k {
            0 => SequenceId::from(SEQ),
            _ => SequenceId::from(format!("urn:uuid:8cf9383c-d191-47fc-a018-{k:012x}").as_str()),
        })
        .collect();
    let mut total = 0usize;
    for i in 0..n {
        let number = 1000 + i;
        let seq = &ids[i as usize % sessions];
        let m = sequence_message(number, &body, piggy_back, seq);
        let wire = encode_sequence(&m, &framing);
        // the runtime decodes bytes hyper received (shared: a clone is a reference count);
        // the encoder's output is an unshared `Bytes` whose first clone allocates, so it is
        // shared here, outside the measured functions
        let shared = wire.clone();
        let d = decode_sequence(&wire, &limits);
        assert_eq!(d.message.sequence.as_ref().map(|s| s.number), Some(number));
        total += d.body_bytes.len();
        drop_decoded(d);
        let a = ack_message(number, seq);
        let wire = encode_ack(&a, &framing);
        let shared = (shared, wire.clone());
        let d = decode_ack(&wire, &limits);
        total += d.header_count;
        drop_decoded(d);
        drop(shared);
    }
    black_box(total);
    if std::env::var_os("HOT_PATH_DUMP").is_some() {
        let m = sequence_message(1000, &body, piggy_back, &ids[0]);
        println!(
            "{}",
            String::from_utf8_lossy(&encode(&m, &framing).expect("encode"))
        );
        println!(
            "{}",
            String::from_utf8_lossy(
                &encode(&ack_message(1000, &ids[0]), &framing).expect("encode")
            )
        );
    }
}
