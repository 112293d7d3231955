//! `cargo bench -p wsrm-wire`: decode and encode of a 1 KiB sequence message and of a
//! standalone acknowledgement, with a roxmltree DOM parse of the same bytes as reference.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wsrm_proto::msg::{AckHeader, Action, Body, Message, RmVersion, SequenceHeader, SequenceId};
use wsrm_wire::{decode, encode_into, Framing, Limits};

fn sequence_message() -> Message {
    // payload sized so that the whole envelope is 1 KiB
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::Other(Arc::from("http://tempuri.org/IOrders/Submit")),
        Body::Empty,
    );
    m.sequence = Some(SequenceHeader {
        identifier: SequenceId::from("urn:uuid:8c5e0f41-27d9-4b6a-b0f3-5a9d2e71c4b2"),
        number: 42,
        last_message: false,
    });
    m.ack = Some(AckHeader {
        identifier: SequenceId::from("urn:uuid:2a9b6c1e-3f47-4d80-a1c5-7e8f90d2b364"),
        ranges: vec![(1, 41)],
        ..AckHeader::default()
    });
    m.message_id = Some(Arc::from("urn:uuid:4b7f3c12-9e0d-4f55-8a61-2d0c9b1e7f30"));
    m.reply_to = Some(Arc::from("http://www.w3.org/2005/08/addressing/anonymous"));
    m.to = Some(Arc::from("http://svc.example/orders.svc"));
    let f = Framing::soap12_wsa10();
    let mut probe = BytesMut::new();
    encode_into(&m, &f, &mut probe).unwrap();
    let head = "<Submit xmlns=\"http://tempuri.org/\"><order><id>42</id><note>";
    let tail = "</note></order></Submit>";
    // `<s:Body/>` in the probe becomes `<s:Body>` + `</s:Body>` (8 more bytes)
    let fill = 1024 - (probe.len() + 8) - head.len() - tail.len();
    let body = format!("{head}{}{tail}", "x".repeat(fill));
    m.body = Body::Application(Bytes::from(body));
    m
}

fn ack_message() -> Message {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::SequenceAcknowledgement,
        Body::Empty,
    );
    m.ack = Some(AckHeader {
        identifier: SequenceId::from("urn:uuid:8c5e0f41-27d9-4b6a-b0f3-5a9d2e71c4b2"),
        ranges: vec![(1, 41)],
        buffer_remaining: Some(7),
        ..AckHeader::default()
    });
    m
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let framing = Framing::soap12_wsa10();
    for (name, msg) in [("seq-1KiB", sequence_message()), ("ack", ack_message())] {
        let mut buf = BytesMut::new();
        encode_into(&msg, &framing, &mut buf).unwrap();
        let bytes = buf.freeze();
        if name == "seq-1KiB" {
            assert_eq!(bytes.len(), 1024);
        }
        // WSRM_BENCH_DUMP=DIR writes the benchmarked messages (for instruction counting with
        // `examples/loop_decode.rs` under callgrind)
        if let Some(dir) = std::env::var_os("WSRM_BENCH_DUMP") {
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("{name}.xml")),
                &bytes,
            );
        }
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        g.bench_function("decode", |b| {
            b.iter(|| decode(black_box(bytes.clone()), &limits).unwrap())
        });
        let mut out = BytesMut::with_capacity(4096);
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                encode_into(black_box(&msg), &framing, &mut out).unwrap();
                black_box(out.len())
            })
        });
        let text = std::str::from_utf8(&bytes).unwrap().to_owned();
        g.bench_function("roxmltree-dom-parse", |b| {
            b.iter(|| {
                roxmltree::Document::parse(black_box(&text))
                    .unwrap()
                    .root()
                    .children()
                    .count()
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
