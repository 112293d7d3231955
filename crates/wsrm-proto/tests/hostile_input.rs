//! Bad input: random, malformed and hostile messages never panic the engine, every HTTP
//! exchange gets exactly one answer, and state stays bounded.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use wsrm_proto::msg::{
    AckHeader, Action, Body, CreateSequence, Fault, Message, Offer, RmVersion, SequenceHeader,
    SequenceId,
};
use wsrm_proto::{
    ClientConfig, ClientSession, Endpoint, EndpointConfig, ExchangeId, Pattern, ServerEvent, Shape,
};

#[derive(Debug, Clone)]
enum Op {
    Cs {
        offer: bool,
        v11: bool,
    },
    Seq {
        sid: usize,
        n: u64,
        last: bool,
        mid: bool,
        ack_req: bool,
    },
    Ack {
        sid: usize,
        ranges: Vec<(u64, u64)>,
        fin: bool,
    },
    Close {
        sid: usize,
        last: Option<u64>,
    },
    Terminate {
        sid: usize,
        last: Option<u64>,
    },
    Fault {
        sid: usize,
    },
    Reply,
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let n = prop_oneof![0u64..20, Just(u64::MAX), Just(i64::MAX as u64)];
    prop_oneof![
        (any::<bool>(), any::<bool>()).prop_map(|(offer, v11)| Op::Cs { offer, v11 }),
        (
            0usize..4,
            n.clone(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(sid, n, last, mid, ack_req)| Op::Seq {
                sid,
                n,
                last,
                mid,
                ack_req
            }),
        (
            0usize..4,
            proptest::collection::vec((0u64..30, 0u64..30), 0..6),
            any::<bool>()
        )
            .prop_map(|(sid, ranges, fin)| Op::Ack { sid, ranges, fin }),
        (0usize..4, proptest::option::of(0u64..20)).prop_map(|(sid, last)| Op::Close { sid, last }),
        (0usize..4, proptest::option::of(0u64..20))
            .prop_map(|(sid, last)| Op::Terminate { sid, last }),
        (0usize..4).prop_map(|sid| Op::Fault { sid }),
        Just(Op::Reply),
        (0u64..700).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(300)))]

    #[test]
    fn endpoint_answers_every_exchange_exactly_once(ops in proptest::collection::vec(op(), 1..60)) {
        let mut now = Instant::now();
        let cfg = EndpointConfig {
            parked_exchange_timeout: Duration::from_secs(30),
            max_sessions: 3,
            ..EndpointConfig::default()
        };
        let mut e = Endpoint::new(cfg, 5).unwrap();
        let mut ids: Vec<SequenceId> = vec![SequenceId::from("urn:uuid:unknown")];
        let mut offers: Vec<SequenceId> = vec![SequenceId::from("urn:uuid:unknown-offer")];
        let mut tokens = Vec::new();
        let mut answers: HashMap<u64, u32> = HashMap::new();
        let mut ex = 0u64;
        for op in ops {
            let v = RmVersion::Wsrm10;
            let msg = match op {
                Op::Cs { offer, v11 } => {
                    let v = if v11 { RmVersion::Wsrm11 } else { RmVersion::Wsrm10 };
                    let o = SequenceId::from(format!("urn:uuid:offer-{ex}"));
                    offers.push(o.clone());
                    let mut m = Message::new(v, Action::CreateSequence, Body::CreateSequence(Box::new(CreateSequence {
                        acks_to: wsrm_proto::WSA10_ANONYMOUS.into(),
                        expires: None,
                        offer: offer.then(|| Offer { identifier: o, endpoint: v11.then(|| wsrm_proto::WSA10_ANONYMOUS.into()), expires: None, incomplete_sequence_behavior: None }),
                    })));
                    m.message_id = Some(Arc::from(format!("urn:uuid:cs-{ex}")));
                    Some(m)
                }
                Op::Seq { sid, n, last, mid, ack_req } => {
                    let id = ids[sid % ids.len()].clone();
                    let mut m = Message::new(v, if last { Action::LastMessage } else { Action::Other("urn:op".into()) },
                        if last { Body::Empty } else { Body::Application(Bytes::from_static(b"x")) });
                    m.sequence = Some(SequenceHeader { identifier: id.clone(), number: n, last_message: last });
                    if mid { m.message_id = Some(Arc::from(format!("urn:uuid:m-{ex}"))); }
                    if ack_req { m.ack_requested = Some(id); }
                    Some(m)
                }
                Op::Ack { sid, ranges, fin } => {
                    let mut m = Message::new(v, Action::SequenceAcknowledgement, Body::Empty);
                    m.ack = Some(AckHeader { identifier: offers[sid % offers.len()].clone(), ranges, final_ack: fin, ..AckHeader::default() });
                    Some(m)
                }
                Op::Close { sid, last } => {
                    let mut m = Message::new(RmVersion::Wsrm11, Action::CloseSequence, Body::CloseSequence { identifier: ids[sid % ids.len()].clone(), last_msg_number: last });
                    m.message_id = Some(Arc::from("urn:uuid:c"));
                    Some(m)
                }
                Op::Terminate { sid, last } => Some(Message::new(v, Action::TerminateSequence, Body::TerminateSequence { identifier: ids[sid % ids.len()].clone(), last_msg_number: last })),
                Op::Fault { sid } => Some(Message::new(v, Action::Fault, Body::Fault(Box::new(Fault::unknown_sequence(&ids[sid % ids.len()]))))),
                Op::Reply => {
                    if let Some(t) = tokens.pop() {
                        let _ = e.reply(now, t, "urn:r".into(), Bytes::from_static(b"r"));
                    }
                    None
                }
                Op::Wait(s) => {
                    now += Duration::from_secs(s);
                    e.handle_timeout(now);
                    None
                }
            };
            if let Some(m) = msg {
                ex += 1;
                answers.insert(ex, 0);
                e.handle_message(now, m, Some(ExchangeId(ex)));
            }
            while let Some(t) = e.poll_transmit(now) {
                if let Some(x) = t.exchange {
                    *answers.entry(x.0).or_insert(0) += 1;
                }
                if let Some(Message { body: Body::CreateSequenceResponse(r), .. }) = &t.message {
                    ids.push(r.identifier.clone());
                }
            }
            while let Some(ev) = e.poll_event() {
                match ev {
                    ServerEvent::SessionCreated { session, .. } => { e.accept(session); }
                    ServerEvent::Delivery { session, number, reply, .. } => {
                        e.delivered(session, number);
                        if let Some(t) = reply { tokens.push(t); }
                    }
                    _ => {}
                }
            }
            prop_assert!(e.session_count() <= 3);
        }
        // Let every parked exchange time out.
        now += Duration::from_secs(3600);
        e.handle_timeout(now);
        while let Some(t) = e.poll_transmit(now) {
            if let Some(x) = t.exchange {
                *answers.entry(x.0).or_insert(0) += 1;
            }
        }
        for (x, n) in answers {
            prop_assert_eq!(n, 1, "exchange {} answered {} times", x, n);
        }
    }

    #[test]
    fn client_survives_hostile_responses(ops in proptest::collection::vec(op(), 1..40)) {
        let mut now = Instant::now();
        let mut c = ClientSession::new(now, ClientConfig::new(Pattern::RequestReply, Shape::RequestReply), 3).unwrap();
        let cs = c.poll_transmit(now).unwrap();
        let mut csr = Message::new(RmVersion::Wsrm10, Action::CreateSequenceResponse, Body::CreateSequenceResponse(Box::new(wsrm_proto::msg::CreateSequenceResponse {
            identifier: SequenceId::from("urn:uuid:out"), expires: None, incomplete_sequence_behavior: None, accept: Some("http://x/".into()) })));
        csr.relates_to = cs.message_id.clone();
        c.handle_message(now, csr);
        for i in 0..5 { let _ = c.request(now, "urn:op".into(), Bytes::from(format!("{i}"))); }
        let ids = [SequenceId::from("urn:uuid:out"), c.input_id().cloned().unwrap(), SequenceId::from("urn:uuid:zzz")];
        for op in ops {
            while c.poll_transmit(now).is_some() {}
            let m = match op {
                Op::Seq { sid, n, last, mid, ack_req } => {
                    let mut m = Message::new(RmVersion::Wsrm10, Action::Other("urn:r".into()), Body::Application(Bytes::from_static(b"r")));
                    m.sequence = Some(SequenceHeader { identifier: ids[sid % 3].clone(), number: n, last_message: last });
                    if mid { m.relates_to = Some(Arc::from("urn:uuid:whatever")); }
                    if ack_req { m.ack_requested = Some(ids[sid % 3].clone()); }
                    m
                }
                Op::Ack { sid, ranges, fin } => {
                    let mut m = Message::new(RmVersion::Wsrm10, Action::SequenceAcknowledgement, Body::Empty);
                    m.ack = Some(AckHeader { identifier: ids[sid % 3].clone(), ranges, final_ack: fin, ..AckHeader::default() });
                    m
                }
                Op::Close { sid, last } => Message::new(RmVersion::Wsrm10, Action::CloseSequence, Body::CloseSequence { identifier: ids[sid % 3].clone(), last_msg_number: last }),
                Op::Terminate { sid, last } => Message::new(RmVersion::Wsrm10, Action::TerminateSequence, Body::TerminateSequence { identifier: ids[sid % 3].clone(), last_msg_number: last }),
                Op::Fault { sid } => Message::new(RmVersion::Wsrm10, Action::Fault, Body::Fault(Box::new(Fault::unknown_sequence(&ids[sid % 3])))),
                Op::Wait(s) => { now += Duration::from_secs(s); c.handle_timeout(now); continue; }
                _ => continue,
            };
            c.handle_message(now, m);
            while c.poll_event().is_some() {}
        }
    }
}
