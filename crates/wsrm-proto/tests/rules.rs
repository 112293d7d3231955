//! One test per protocol rule (wire-protocol.md section named in each test), driving the public
//! `ClientSession` / `Endpoint` API in virtual time and asserting exact outcomes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wsrm_proto::msg::{
    AckHeader, Action, Body, CreateSequence, FaultCode, FaultKind, Message, Offer, RmVersion,
    SequenceHeader, SequenceId,
};
use wsrm_proto::{
    ClientConfig, ClientEvent, ClientSession, ClientState, Endpoint, EndpointConfig, ExchangeId,
    Pattern, ServerEvent, ServerTransmit, SessionError, SessionId, Shape,
};

const ADDR: &str = "http://svc.example/orders.svc";

fn action() -> Arc<str> {
    Arc::from("urn:op")
}

fn body(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

struct Pair {
    now: Instant,
    client: ClientSession,
    server: Endpoint,
    ex: u64,
    /// Every message the client put on the wire.
    sent: Vec<Message>,
    events: Vec<ServerEvent>,
    cevents: Vec<ClientEvent>,
    duplex: bool,
}

impl Pair {
    /// An opened one-way pair of `version` (default endpoint) whose client has queued the
    /// messages m1..=m`n`, numbered 1..=`n` (not pumped yet).
    fn one_way_with_queued(version: RmVersion, n: u64) -> Pair {
        let mut p = Pair::new(Pattern::OneWay, version, EndpointConfig::default());
        p.pump();
        assert_eq!(p.client.state(), ClientState::Open);
        for i in 1..=n {
            let number = p
                .client
                .send(p.now, action(), body(&format!("m{i}")))
                .unwrap();
            assert_eq!(number, i);
        }
        p
    }

    fn new(pattern: Pattern, version: RmVersion, ecfg: EndpointConfig) -> Pair {
        let shape = if pattern == Pattern::Duplex {
            Shape::Duplex
        } else {
            Shape::RequestReply
        };
        let now = Instant::now();
        let mut c = ClientConfig::new(pattern, shape);
        c.settings.reliable_messaging_version = version;
        c.remote_address = Some(Arc::from(ADDR));
        if shape == Shape::Duplex {
            c.local_address = Arc::from("http://client.example/cb");
        }
        let client = ClientSession::new(now, c, 1).unwrap();
        let mut e = ecfg;
        e.address = Some(Arc::from(ADDR));
        let server = Endpoint::new(e, 2).unwrap();
        Pair {
            now,
            client,
            server,
            ex: 0,
            sent: Vec::new(),
            events: Vec::new(),
            cevents: Vec::new(),
            duplex: shape == Shape::Duplex,
        }
    }

    /// Delivers everything both ways (no loss) until quiet; `drop_client` drops client
    /// messages for which it returns true.
    fn pump_with(&mut self, mut drop_client: impl FnMut(&Message) -> bool) {
        loop {
            let mut progress = false;
            while let Some(m) = self.client.poll_transmit(self.now) {
                progress = true;
                self.sent.push(m.clone());
                if drop_client(&m) {
                    continue;
                }
                self.ex += 1;
                let ex = (!self.duplex).then_some(ExchangeId(self.ex));
                self.server.handle_message(self.now, m, ex);
            }
            while let Some(t) = self.server.poll_transmit(self.now) {
                progress = true;
                if let Some(m) = t.message {
                    self.client.handle_message(self.now, m);
                }
            }
            while let Some(e) = self.server.poll_event() {
                progress = true;
                if let ServerEvent::SessionCreated { session, .. } = &e {
                    self.server.accept(*session);
                }
                if let ServerEvent::Delivery {
                    session, number, ..
                } = &e
                {
                    self.server.delivered(*session, *number);
                }
                self.events.push(e);
            }
            while let Some(e) = self.client.poll_event() {
                progress = true;
                self.cevents.push(e);
            }
            if !progress {
                break;
            }
        }
    }

    fn pump(&mut self) {
        self.pump_with(|_| false);
    }

    fn advance_to(&mut self, t: Instant) {
        self.now = t;
        self.client.handle_timeout(t);
        self.server.handle_timeout(t);
    }
}

fn cs_message(
    version: RmVersion,
    acks_to: &str,
    reply_to: Option<&str>,
    offer: Option<&str>,
) -> Message {
    let mut m = Message::new(
        version,
        Action::CreateSequence,
        Body::CreateSequence(Box::new(CreateSequence {
            acks_to: acks_to.to_string(),
            expires: None,
            offer: offer.map(|o| Offer {
                identifier: SequenceId::from(o),
                endpoint: (version == RmVersion::Wsrm11).then(|| acks_to.to_string()),
                expires: None,
                incomplete_sequence_behavior: None,
            }),
        })),
    );
    m.message_id = Some(Arc::from("urn:uuid:00000000-0000-4000-8000-000000000001"));
    m.reply_to = reply_to.map(Arc::from);
    m.to = Some(Arc::from(ADDR));
    m
}

fn one_answer(server: &mut Endpoint, now: Instant) -> ServerTransmit {
    let t = server.poll_transmit(now).expect("an answer");
    assert!(server.poll_transmit(now).is_none(), "exactly one answer");
    t
}

fn fault_kind(m: &Message) -> Option<(FaultCode, FaultKind)> {
    match &m.body {
        Body::Fault(f) => Some((f.code, f.kind.clone())),
        _ => None,
    }
}

fn seq_msg(id: &SequenceId, n: u64, mid: Option<&str>) -> Message {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::Other(action()),
        Body::Application(body(&format!("m{n}"))),
    );
    m.sequence = Some(SequenceHeader {
        identifier: id.clone(),
        number: n,
        last_message: false,
    });
    m.message_id = mid.map(Arc::from);
    m
}

/// Opens a session on `server` with a raw CreateSequence; returns (session, input id).
fn open_raw(
    server: &mut Endpoint,
    now: Instant,
    version: RmVersion,
    offer: Option<&str>,
    ex: u64,
) -> (SessionId, SequenceId) {
    let anon = wsrm_proto::WSA10_ANONYMOUS;
    server.handle_message(
        now,
        cs_message(version, anon, None, offer),
        Some(ExchangeId(ex)),
    );
    let t = one_answer(server, now);
    let Some(Message {
        body: Body::CreateSequenceResponse(r),
        ..
    }) = t.message
    else {
        panic!("expected CSR, got {:?}", t.message);
    };
    let Some(ServerEvent::SessionCreated { session, .. }) = server.poll_event() else {
        panic!("no SessionCreated");
    };
    server.accept(session);
    (session, r.identifier)
}

// §4.3: the same CreateSequence (same MessageID) is re-sent every 10 s until the open timeout.
#[test]
fn rule_4_3_create_sequence_retry_same_message_id_then_open_timeout() {
    let now = Instant::now();
    let cfg = ClientConfig::new(Pattern::OneWay, Shape::RequestReply);
    let mut c = ClientSession::new(now, cfg, 9).unwrap();
    let first = c.poll_transmit(now).unwrap();
    assert_eq!(first.action, Action::CreateSequence);
    let mid = first.message_id.clone().unwrap();
    assert!(mid.starts_with("urn:uuid:") && mid.len() == 45);
    assert!(c.poll_transmit(now).is_none());
    let mut times = vec![];
    let t = loop {
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        if c.state() == ClientState::Failed {
            break t;
        }
        let m = c.poll_transmit(t).unwrap();
        assert_eq!(m.message_id.as_ref(), Some(&mid));
        times.push(t.duration_since(now).as_secs());
    };
    assert_eq!(times, vec![10, 20, 30, 40, 50]);
    assert_eq!(t.duration_since(now), Duration::from_secs(60));
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Failed {
            error: SessionError::OpenTimeout,
            ..
        })
    ));
}

// §4.4: a reply/duplex-only endpoint refuses a CreateSequence without Offer.
#[test]
fn rule_4_4_no_offer_refused_by_request_reply_endpoint() {
    let mut p = Pair::new(
        Pattern::OneWay,
        RmVersion::Wsrm10,
        EndpointConfig {
            accept_one_way: false,
            ..EndpointConfig::default()
        },
    );
    p.pump();
    assert_eq!(p.client.state(), ClientState::Failed);
    match &p.cevents[..] {
        [ClientEvent::Failed {
            error: SessionError::Refused(f),
            ..
        }] => {
            assert_eq!(f.kind, FaultKind::CreateSequenceRefused);
            assert_eq!(f.code, FaultCode::Sender);
        }
        e => panic!("{e:?}"),
    }
}

// A destination that cannot read our addressing headers (a WS-Addressing version mismatch)
// answers the CreateSequence's HTTP request with a fault that has no RelatesTo: over a
// request-reply transport that fault is the CreateSequence's answer, and the open fails with it
// at once (it used to wait for OpenTimeout). Over a duplex transport it relates to nothing and
// is ignored.
#[test]
fn a_fault_without_relates_to_answers_the_create_sequence_over_request_reply() {
    for (shape, fails) in [(Shape::RequestReply, true), (Shape::Duplex, false)] {
        let now = Instant::now();
        let mut c = ClientSession::new(now, ClientConfig::new(Pattern::OneWay, shape), 9).unwrap();
        let cs = c.poll_transmit(now).unwrap();
        assert!(matches!(cs.body, Body::CreateSequence(_)));
        let f = wsrm_proto::msg::Fault::new(
            FaultCode::Sender,
            FaultKind::Other(Some("VersionMismatch".into())),
            "The message version of the request does not match the binding's message version.",
            wsrm_proto::msg::FaultDetail::None,
        );
        let m = Message::new(RmVersion::Wsrm10, Action::Fault, Body::Fault(Box::new(f)));
        c.handle_message(now, m);
        if fails {
            assert_eq!(c.state(), ClientState::Failed, "{shape:?}");
            assert!(matches!(
                c.poll_event(),
                Some(ClientEvent::Failed {
                    error: SessionError::RemoteFault(_),
                    ..
                })
            ));
        } else {
            assert_eq!(c.state(), ClientState::Connecting, "{shape:?}");
        }
    }
}

// §4.4 / §2.6: a 1.1 one-way endpoint accepts an offering CS but omits Accept; the client
// faults the new sequence with SequenceTerminated.
#[test]
fn rule_4_4_offer_to_11_one_way_endpoint_answers_without_accept() {
    let mut p = Pair::new(
        Pattern::RequestReply,
        RmVersion::Wsrm11,
        EndpointConfig {
            accept_request_reply: false,
            accept_duplex: false,
            ..EndpointConfig::default()
        },
    );
    p.pump();
    match &p.cevents[..] {
        [ClientEvent::Failed {
            error: SessionError::ProtocolViolation(f),
            ..
        }] => assert_eq!(f.kind, FaultKind::SequenceTerminated),
        e => panic!("{e:?}"),
    }
}

// §4.13: MaxPendingChannels counts sessions not yet accepted; the next CS is refused with
// CreateSequenceRefused / ConnectionLimitReached (Receiver).
#[test]
fn rule_4_13_max_pending_channels_connection_limit_reached() {
    let now = Instant::now();
    let mut cfg = EndpointConfig::default();
    cfg.settings.max_pending_channels = 2;
    let mut e = Endpoint::new(cfg, 3).unwrap();
    let anon = wsrm_proto::WSA10_ANONYMOUS;
    for ex in 1..=2 {
        e.handle_message(
            now,
            cs_message(RmVersion::Wsrm10, anon, None, None),
            Some(ExchangeId(ex)),
        );
        assert!(matches!(
            one_answer(&mut e, now).message.unwrap().body,
            Body::CreateSequenceResponse(_)
        ));
    }
    e.handle_message(
        now,
        cs_message(RmVersion::Wsrm10, anon, None, None),
        Some(ExchangeId(3)),
    );
    let t = one_answer(&mut e, now);
    assert_eq!(t.exchange, Some(ExchangeId(3)));
    assert_eq!(
        fault_kind(&t.message.unwrap()),
        Some((FaultCode::Receiver, FaultKind::ConnectionLimitReached))
    );
    // Accepting one frees a slot.
    let Some(ServerEvent::SessionCreated { session, .. }) = e.poll_event() else {
        panic!()
    };
    assert!(e.accept(session));
    e.handle_message(
        now,
        cs_message(RmVersion::Wsrm10, anon, None, None),
        Some(ExchangeId(4)),
    );
    assert!(matches!(
        one_answer(&mut e, now).message.unwrap().body,
        Body::CreateSequenceResponse(_)
    ));
}

// §2.5: AcksTo must equal ReplyTo; CS without MessageID gets MessageAddressingHeaderRequired.
#[test]
fn rule_2_5_acks_to_must_equal_reply_to_and_message_id_required() {
    let now = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3).unwrap();
    e.handle_message(
        now,
        cs_message(
            RmVersion::Wsrm10,
            "http://a.example/",
            Some("http://b.example/"),
            None,
        ),
        Some(ExchangeId(1)),
    );
    assert_eq!(
        fault_kind(&one_answer(&mut e, now).message.unwrap()),
        Some((FaultCode::Sender, FaultKind::CreateSequenceRefused))
    );
    let mut m = cs_message(RmVersion::Wsrm10, wsrm_proto::WSA10_ANONYMOUS, None, None);
    m.message_id = None;
    e.handle_message(now, m, Some(ExchangeId(2)));
    assert_eq!(
        fault_kind(&one_answer(&mut e, now).message.unwrap()),
        Some((
            FaultCode::Sender,
            FaultKind::MessageAddressingHeaderRequired
        ))
    );
    assert_eq!(e.session_count(), 0);
}

// W9 / §4.13: a message for an unknown identifier gets UnknownSequence naming it.
#[test]
fn rule_w9_unknown_sequence() {
    let now = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3).unwrap();
    let id = SequenceId::from("urn:uuid:deadbeef");
    e.handle_message(now, seq_msg(&id, 1, None), Some(ExchangeId(1)));
    let t = one_answer(&mut e, now);
    match t.message.unwrap().body {
        Body::Fault(f) => {
            assert_eq!(f.kind, FaultKind::UnknownSequence);
            assert_eq!(f.detail.identifier(), Some(&id));
        }
        b => panic!("{b:?}"),
    }
}

// §4.11: a retransmitted request gets the cached reply (same reply number); the application
// executes it once; a duplicate arriving before the reply is parked and an older parked
// exchange is superseded with 202.
#[test]
fn rule_4_11_reply_cache_replay_and_parked_duplicates() {
    let now = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3).unwrap();
    let (session, id) = open_raw(&mut e, now, RmVersion::Wsrm10, Some("urn:uuid:offer"), 1);
    let req = seq_msg(&id, 1, Some("urn:uuid:req1"));
    e.handle_message(now, req.clone(), Some(ExchangeId(2)));
    assert!(e.poll_transmit(now).is_none(), "parked until the reply");
    let Some(ServerEvent::Delivery {
        reply: Some(token),
        number: 1,
        ..
    }) = e.poll_event()
    else {
        panic!()
    };
    // Duplicate while pending: exchange 2 superseded with 202, exchange 3 parked.
    e.handle_message(now, req.clone(), Some(ExchangeId(3)));
    let t = one_answer(&mut e, now);
    assert_eq!((t.exchange, t.message), (Some(ExchangeId(2)), None));
    assert_eq!(e.reply(now, token, action(), body("r1")).unwrap(), 1);
    let t = one_answer(&mut e, now);
    assert_eq!(t.exchange, Some(ExchangeId(3)));
    let reply = t.message.unwrap();
    assert_eq!(reply.relates_to.as_deref(), Some("urn:uuid:req1"));
    assert_eq!(reply.sequence.as_ref().unwrap().number, 1);
    assert_eq!(reply.ack.as_ref().unwrap().ranges, vec![(1, 1)]);
    // Not yet released by the application (`delivered`): one slot in use.
    assert_eq!(reply.ack.as_ref().unwrap().buffer_remaining, Some(7));
    // Retransmission after the reply: replayed, not re-executed.
    e.handle_message(now, req, Some(ExchangeId(4)));
    let t = one_answer(&mut e, now);
    assert_eq!(t.message.unwrap().sequence.unwrap().number, 1);
    assert!(e.poll_event().is_none(), "executed once");
    assert_eq!(e.stats(session).unwrap().duplicates_dropped, 2);
}

/// Sends request `number` (a new session, parked-exchange limit 5 s) and checks that its exchange
/// waits and then gets 202 at the limit.
fn parked_exchange_times_out_with_202(version: RmVersion, number: u64) {
    let now = Instant::now();
    let mut e = Endpoint::new(
        EndpointConfig {
            parked_exchange_timeout: Duration::from_secs(5),
            ..EndpointConfig::default()
        },
        3,
    )
    .unwrap();
    let (_, id) = open_raw(&mut e, now, version, Some("urn:uuid:offer"), 1);
    e.handle_message(
        now,
        seq_msg(&id, number, Some("urn:uuid:r")),
        Some(ExchangeId(7)),
    );
    assert!(e.poll_transmit(now).is_none());
    let t = e.poll_timeout().unwrap();
    assert_eq!(t.duration_since(now), Duration::from_secs(5));
    e.handle_timeout(t);
    let a = one_answer(&mut e, t);
    assert_eq!((a.exchange, a.message), (Some(ExchangeId(7)), None));
}

// §4.11: a parked exchange gets 202 after the configured limit.
#[test]
fn rule_4_11_parked_exchange_times_out_with_202() {
    parked_exchange_times_out_with_202(RmVersion::Wsrm11, 1);
}

// docs/engine.md deviation 10: a two-way request admitted ahead of a gap keeps its HTTP exchange
// until its reply (no bare ack now); a retransmission of it supersedes the waiting exchange
// (202); once the gap is filled, each reply rides its own request's exchange.
#[test]
fn buffered_request_keeps_its_exchange_until_the_reply() {
    let now = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3).unwrap();
    let (_, id) = open_raw(&mut e, now, RmVersion::Wsrm11, Some("urn:uuid:offer"), 1);
    let req2 = seq_msg(&id, 2, Some("urn:uuid:req2"));
    e.handle_message(now, req2.clone(), Some(ExchangeId(10)));
    assert!(
        e.poll_transmit(now).is_none(),
        "request 2 waits behind the gap"
    );
    assert!(e.poll_event().is_none(), "not delivered before request 1");
    e.handle_message(now, req2, Some(ExchangeId(11)));
    let t = one_answer(&mut e, now);
    assert_eq!((t.exchange, t.message), (Some(ExchangeId(10)), None));
    e.handle_message(
        now,
        seq_msg(&id, 1, Some("urn:uuid:req1")),
        Some(ExchangeId(12)),
    );
    assert!(
        e.poll_transmit(now).is_none(),
        "both wait for their replies"
    );
    let mut tokens = Vec::new();
    while let Some(ev) = e.poll_event() {
        if let ServerEvent::Delivery {
            number,
            reply: Some(token),
            ..
        } = ev
        {
            tokens.push((number, token));
        }
    }
    assert_eq!(
        tokens.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![1, 2]
    );
    for (n, token) in tokens {
        e.reply(now, token, action(), body(&format!("r{n}")))
            .unwrap();
    }
    let mut answers = Vec::new();
    while let Some(t) = e.poll_transmit(now) {
        let m = t.message.expect("a reply");
        answers.push((t.exchange, m.relates_to.clone()));
    }
    answers.sort();
    assert_eq!(
        answers,
        vec![
            (Some(ExchangeId(11)), Some("urn:uuid:req2".into())),
            (Some(ExchangeId(12)), Some("urn:uuid:req1".into())),
        ]
    );
}

// A request waiting ahead of a gap gets 202 after the parked-exchange limit, like a delivered
// one.
#[test]
fn buffered_request_exchange_times_out_with_202() {
    parked_exchange_times_out_with_202(RmVersion::Wsrm10, 3);
}

// §4.5 step 6 / W14: a message is transmitted at most 1 + MaxRetryCount times; then the
// session fails with SequenceTerminated (Receiver) and reports exactly the unacknowledged
// messages.
#[test]
fn rule_4_5_retry_exhaustion_reports_unacknowledged() {
    let mut p = Pair::one_way_with_queued(RmVersion::Wsrm10, 3);
    let drop_all = |m: &Message| m.sequence.is_some();
    p.pump_with(drop_all);
    while p.client.state() == ClientState::Open {
        let t = p.client.poll_timeout().unwrap();
        p.advance_to(t);
        p.pump_with(drop_all);
    }
    let firsts = p
        .sent
        .iter()
        .filter(|m| m.sequence.as_ref().is_some_and(|s| s.number == 1))
        .count();
    assert_eq!(firsts, 9);
    assert!(p
        .sent
        .iter()
        .all(|m| m.sequence.as_ref().is_none_or(|s| s.number == 1)));
    let last = p.sent.last().unwrap();
    assert_eq!(
        fault_kind(last),
        Some((FaultCode::Receiver, FaultKind::SequenceTerminated))
    );
    assert!(p.cevents.iter().any(|e| matches!(e, ClientEvent::Failed {
        error: SessionError::RetryExhausted { number: 1 },
        unacknowledged,
    } if unacknowledged == &vec![1, 2, 3])));
}

// A message the destination's transport refused for its size (HTTP 413) can never get
// through, and the sequence cannot complete without it: the session fails at once with
// MessageTooLarge and tells the destination with a SequenceTerminated fault (WCF's
// QuotaExceeded), instead of retransmitting to MaxRetryCount. Numbers that are not
// outstanding are ignored, and an oversized answer to a one-way message is only a lost
// acknowledgement.
#[test]
fn a_message_refused_for_its_size_fails_the_session_at_once() {
    let mut p = Pair::one_way_with_queued(RmVersion::Wsrm10, 3);
    p.pump_with(|m: &Message| m.sequence.as_ref().is_some_and(|s| s.number == 2));
    // 1 is acknowledged, 7 was never sent: ignored.
    p.client.handle_too_large(p.now, 1, false);
    p.client.handle_too_large(p.now, 7, false);
    assert_eq!(p.client.state(), ClientState::Open);
    // One-way: an answer too large is an acknowledgement that did not get through.
    p.client.handle_too_large(p.now, 2, true);
    assert_eq!(p.client.state(), ClientState::Open);
    p.client.handle_too_large(p.now, 2, false);
    assert_eq!(p.client.state(), ClientState::Failed);
    let m = p.client.poll_transmit(p.now).unwrap();
    assert_eq!(
        fault_kind(&m),
        Some((FaultCode::Sender, FaultKind::SequenceTerminated))
    );
    assert!(p.client.poll_transmit(p.now).is_none());
    while let Some(e) = p.client.poll_event() {
        p.cevents.push(e);
    }
    assert!(p.cevents.iter().any(|e| matches!(e, ClientEvent::Failed {
        error: SessionError::MessageTooLarge { number: 2 },
        unacknowledged,
    } if unacknowledged == &vec![2])));
}

// Request-reply: a reply larger than the client accepts can never be received, so the request
// can never be answered: the session fails at once with ReplyTooLarge.
#[test]
fn a_reply_too_large_to_receive_fails_the_session_at_once() {
    let mut p = Pair::new(
        Pattern::RequestReply,
        RmVersion::Wsrm11,
        EndpointConfig::default(),
    );
    p.pump();
    assert_eq!(p.client.state(), ClientState::Open);
    let n = p.client.request(p.now, action(), body("q")).unwrap();
    p.pump_with(|m: &Message| m.sequence.is_some());
    p.client.handle_too_large(p.now, n, true);
    assert_eq!(p.client.state(), ClientState::Failed);
    let m = p.client.poll_transmit(p.now).unwrap();
    assert_eq!(
        fault_kind(&m),
        Some((FaultCode::Sender, FaultKind::SequenceTerminated))
    );
    while let Some(e) = p.client.poll_event() {
        p.cevents.push(e);
    }
    assert!(p.cevents.iter().any(|e| matches!(
        e,
        ClientEvent::Failed {
            error: SessionError::ReplyTooLarge { number },
            ..
        } if *number == n
    )));
}

// §4.6 / W12: an ack covering an unsent number is InvalidAcknowledgement; the session fails
// and the fault is sent.
#[test]
fn rule_4_6_invalid_acknowledgement() {
    let mut p = Pair::new(
        Pattern::OneWay,
        RmVersion::Wsrm10,
        EndpointConfig::default(),
    );
    p.pump();
    p.client.send(p.now, action(), body("a")).unwrap();
    p.pump_with(|m| m.sequence.is_some());
    let id = p.client.output_id().unwrap().clone();
    let mut ack = Message::new(
        RmVersion::Wsrm10,
        Action::SequenceAcknowledgement,
        Body::Empty,
    );
    ack.ack = Some(AckHeader {
        identifier: id,
        ranges: vec![(1, 5)],
        ..AckHeader::default()
    });
    p.client.handle_message(p.now, ack);
    let m = p.client.poll_transmit(p.now).unwrap();
    assert_eq!(
        fault_kind(&m),
        Some((FaultCode::Sender, FaultKind::InvalidAcknowledgement))
    );
    let ev: Vec<_> = std::iter::from_fn(|| p.client.poll_event()).collect();
    assert!(ev.iter().any(|e| matches!(e, ClientEvent::Failed { error: SessionError::ProtocolViolation(f), unacknowledged } if f.kind == FaultKind::InvalidAcknowledgement && unacknowledged == &vec![1])));
}

// §4.9: keep-alive AckRequested after InactivityTimeout/2 of silence, then every
// InactivityTimeout/(2·MaxRetryCount).
#[test]
fn rule_4_9_keep_alive_schedule() {
    let mut p = Pair::new(
        Pattern::OneWay,
        RmVersion::Wsrm10,
        EndpointConfig::default(),
    );
    p.pump();
    let opened = p.now;
    let mut polls = vec![];
    // Drop everything so the client keeps polling.
    for _ in 0..3 {
        let t = p.client.poll_timeout().unwrap();
        p.now = t;
        p.client.handle_timeout(t);
        let m = p.client.poll_transmit(t).unwrap();
        assert_eq!(m.action, Action::AckRequested);
        assert_eq!(m.ack_requested.as_ref(), p.client.output_id());
        polls.push(t.duration_since(opened).as_millis());
    }
    assert_eq!(polls, vec![300_000, 337_500, 375_000]);
}

// §4.9: the server fails a session after InactivityTimeout without messages.
#[test]
fn rule_4_9_server_inactivity_timeout() {
    let now = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3).unwrap();
    let (session, _) = open_raw(&mut e, now, RmVersion::Wsrm10, None, 1);
    let t = e.poll_timeout().unwrap();
    assert_eq!(t.duration_since(now), Duration::from_secs(600));
    e.handle_timeout(t);
    assert!(
        matches!(e.poll_event(), Some(ServerEvent::SessionFailed { session: s, error: SessionError::InactivityTimeout, .. }) if s == session)
    );
    assert_eq!(e.session_count(), 0);
}

// §4.7 step 1 (1.1) / W11.3: after CloseSequence a new number gets SequenceClosed (session kept),
// a duplicate gets a plain final ack.
#[test]
fn rule_4_7_sequence_closed_11() {
    let now = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3).unwrap();
    let (_, id) = open_raw(&mut e, now, RmVersion::Wsrm11, None, 1);
    for n in 1..=3 {
        let mut m = seq_msg(&id, n, None);
        m.version = RmVersion::Wsrm11;
        e.handle_message(now, m, Some(ExchangeId(10 + n)));
        one_answer(&mut e, now);
    }
    let mut close = Message::new(
        RmVersion::Wsrm11,
        Action::CloseSequence,
        Body::CloseSequence {
            identifier: id.clone(),
            last_msg_number: Some(3),
        },
    );
    close.message_id = Some(Arc::from("urn:uuid:c"));
    e.handle_message(now, close, Some(ExchangeId(20)));
    let r = one_answer(&mut e, now).message.unwrap();
    assert!(matches!(r.body, Body::CloseSequenceResponse { .. }));
    assert_eq!(r.relates_to.as_deref(), Some("urn:uuid:c"));
    let a = r.ack.unwrap();
    assert_eq!((a.ranges, a.final_ack), (vec![(1, 3)], true));
    let mut m4 = seq_msg(&id, 4, None);
    m4.version = RmVersion::Wsrm11;
    e.handle_message(now, m4, Some(ExchangeId(21)));
    assert_eq!(
        fault_kind(&one_answer(&mut e, now).message.unwrap()),
        Some((FaultCode::Sender, FaultKind::SequenceClosed))
    );
    let mut m2 = seq_msg(&id, 2, None);
    m2.version = RmVersion::Wsrm11;
    e.handle_message(now, m2, Some(ExchangeId(22)));
    let a = one_answer(&mut e, now).message.unwrap().ack.unwrap();
    assert_eq!((a.ranges, a.final_ack), (vec![(1, 3)], true));
    assert_eq!(e.session_count(), 1);
}

// §4.7 step 1 (1.0) / W11.1: a number above the LastMessage number is
// LastMessageNumberExceeded and fails the session.
#[test]
fn rule_4_7_last_message_number_exceeded_10() {
    let now = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3).unwrap();
    let (session, id) = open_raw(&mut e, now, RmVersion::Wsrm10, None, 1);
    let mut last = Message::new(RmVersion::Wsrm10, Action::LastMessage, Body::Empty);
    last.sequence = Some(SequenceHeader {
        identifier: id.clone(),
        number: 1,
        last_message: true,
    });
    e.handle_message(now, last, Some(ExchangeId(2)));
    assert_eq!(
        one_answer(&mut e, now).message.unwrap().ack.unwrap().ranges,
        vec![(1, 1)]
    );
    e.handle_message(now, seq_msg(&id, 2, None), Some(ExchangeId(3)));
    assert_eq!(
        fault_kind(&one_answer(&mut e, now).message.unwrap()),
        Some((FaultCode::Sender, FaultKind::LastMessageNumberExceeded))
    );
    assert!(
        matches!(e.poll_event(), Some(ServerEvent::SessionFailed { session: s, .. }) if s == session)
    );
}

// §4.7 / §4.8: ordered delivery holds out-of-order messages; BufferRemaining counts held and
// unreleased messages; messages beyond the window are dropped unacknowledged.
#[test]
fn rule_4_8_buffer_remaining_and_receive_window() {
    let now = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3).unwrap();
    let (session, id) = open_raw(&mut e, now, RmVersion::Wsrm10, None, 1);
    e.handle_message(now, seq_msg(&id, 2, None), Some(ExchangeId(2)));
    let a = one_answer(&mut e, now).message.unwrap().ack.unwrap();
    assert_eq!((a.ranges, a.buffer_remaining), (vec![(2, 2)], Some(7)));
    assert!(e.poll_event().is_none(), "held, not delivered");
    e.handle_message(now, seq_msg(&id, 9, None), Some(ExchangeId(3)));
    let a = one_answer(&mut e, now).message.unwrap().ack.unwrap();
    assert_eq!(
        a.ranges,
        vec![(2, 2)],
        "9 is beyond the buffer: dropped unacknowledged"
    );
    e.handle_message(now, seq_msg(&id, 1, None), Some(ExchangeId(4)));
    let a = one_answer(&mut e, now).message.unwrap().ack.unwrap();
    assert_eq!((a.ranges, a.buffer_remaining), (vec![(1, 2)], Some(6)));
    let delivered: Vec<u64> = std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            ServerEvent::Delivery { number, .. } => Some(number),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec![1, 2]);
    assert!(e.delivered(session, 1));
    assert!(!e.delivered(session, 1), "released once");
    e.handle_message(now, seq_msg(&id, 1, None), Some(ExchangeId(5)));
    let a = one_answer(&mut e, now).message.unwrap().ack.unwrap();
    assert_eq!(a.buffer_remaining, Some(7));
}

// §4.10: 1.0 close = LastMessage then TerminateSequence; 1.1 close = CloseSequence (final ack
// 1..N) then TerminateSequence; both end with Closed events on both sides.
#[test]
fn rule_4_10_close_sequences_per_version() {
    for version in [RmVersion::Wsrm10, RmVersion::Wsrm11] {
        let mut p = Pair::one_way_with_queued(version, 3);
        p.pump();
        p.client.close(p.now).unwrap();
        p.pump();
        assert_eq!(p.client.state(), ClientState::Closed, "{version}");
        let tail: Vec<Action> = p
            .sent
            .iter()
            .rev()
            .take(2)
            .rev()
            .map(|m| m.action.clone())
            .collect();
        match version {
            RmVersion::Wsrm10 => {
                assert_eq!(tail, vec![Action::LastMessage, Action::TerminateSequence]);
                assert_eq!(
                    p.sent[p.sent.len() - 2].sequence.as_ref().unwrap().number,
                    4
                );
            }
            RmVersion::Wsrm11 => {
                assert_eq!(tail, vec![Action::CloseSequence, Action::TerminateSequence]);
                assert!(matches!(
                    p.sent[p.sent.len() - 2].body,
                    Body::CloseSequence {
                        last_msg_number: Some(3),
                        ..
                    }
                ));
            }
        }
        let delivered = p
            .events
            .iter()
            .filter(|e| matches!(e, ServerEvent::Delivery { .. }))
            .count();
        assert_eq!(delivered, 3);
        assert!(p
            .events
            .iter()
            .any(|e| matches!(e, ServerEvent::SessionClosed { .. })));
        assert!(p.cevents.contains(&ClientEvent::Closed));
    }
}

// §4.10 + interop (docs/interop.md, gSOAP quirk 14, CXF quirk 12): gSOAP 2.8 answers
// CloseSequence with ranges 1..last but no <Final/>; CXF 4.2 with no ack at all. Such an
// answer is accepted when it covers exactly 1..last, or carries no ack while every message is
// already acknowledged (CloseSequence is only sent then); an ack with a gap still faults.
#[test]
fn interop_close_response_without_final_accepted_only_when_complete() {
    let cases = [
        (Some(vec![(1u64, 3u64)]), true),
        (Some(vec![(1, 2)]), false),
        (Some(vec![(1, 1), (3, 3)]), false),
        (None, true),
    ];
    for (ranges, accepted) in cases {
        let mut p = Pair::one_way_with_queued(RmVersion::Wsrm11, 3);
        p.pump();
        p.client.close(p.now).unwrap();
        let cs = p.client.poll_transmit(p.now).unwrap();
        let Body::CloseSequence { identifier, .. } = &cs.body else {
            panic!("expected CloseSequence, got {:?}", cs.action);
        };
        let mut r = Message::new(
            RmVersion::Wsrm11,
            Action::CloseSequenceResponse,
            Body::CloseSequenceResponse {
                identifier: identifier.clone(),
            },
        );
        r.relates_to = cs.message_id.clone();
        r.ack = ranges.clone().map(|ranges| AckHeader {
            identifier: identifier.clone(),
            ranges,
            ..AckHeader::default()
        });
        p.client.handle_message(p.now, r);
        let next = p.client.poll_transmit(p.now).map(|m| m.action);
        if accepted {
            assert_eq!(next, Some(Action::TerminateSequence), "{ranges:?}");
            assert_eq!(p.client.state(), ClientState::Closing, "{ranges:?}");
        } else {
            assert_eq!(p.client.state(), ClientState::Failed, "{ranges:?}");
        }
    }
}

// §4.11: request-reply end to end: replies correlate with requests and arrive exactly once.
#[test]
fn rule_4_11_request_reply_round_trip() {
    let mut p = Pair::new(
        Pattern::RequestReply,
        RmVersion::Wsrm11,
        EndpointConfig::default(),
    );
    p.pump();
    let r1 = p.client.request(p.now, action(), body("q1")).unwrap();
    p.pump();
    let tokens: Vec<_> = p
        .events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Delivery { reply: Some(t), .. } => Some(*t),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), 1);
    p.server
        .reply(p.now, tokens[0], action(), body("a1"))
        .unwrap();
    p.pump();
    assert!(p.cevents.iter().any(|e| matches!(e, ClientEvent::Reply { request, number: 1, payload, .. } if *request == r1 && payload == &body("a1"))));
    p.client.close(p.now).unwrap();
    p.pump();
    assert_eq!(p.client.state(), ClientState::Closed);
}

// §4.7 ack generation on duplex transports: an accepted message starts the
// AcknowledgementInterval timer (200 ms); AckRequested is answered at once.
#[test]
fn rule_4_7_duplex_ack_batching_and_immediate_ack_on_ack_requested() {
    let now = Instant::now();
    let mut e = Endpoint::new(EndpointConfig::default(), 3).unwrap();
    let cb = "http://client.example/cb";
    e.handle_message(now, cs_message(RmVersion::Wsrm10, cb, Some(cb), None), None);
    let csr = e.poll_transmit(now).unwrap();
    assert_eq!(csr.exchange, None);
    let Some(Message {
        body: Body::CreateSequenceResponse(r),
        to,
        ..
    }) = csr.message
    else {
        panic!()
    };
    assert_eq!(to.as_deref(), Some(cb));
    let id = r.identifier;
    e.handle_message(now, seq_msg(&id, 1, None), None);
    assert!(e.poll_transmit(now).is_none(), "batched");
    let t = e.poll_timeout().unwrap();
    assert_eq!(t.duration_since(now), Duration::from_millis(200));
    e.handle_timeout(t);
    let a = e.poll_transmit(t).unwrap().message.unwrap();
    assert_eq!(a.action, Action::SequenceAcknowledgement);
    assert_eq!(a.ack.unwrap().ranges, vec![(1, 1)]);
    let mut m2 = seq_msg(&id, 2, None);
    m2.ack_requested = Some(id.clone());
    e.handle_message(t, m2, None);
    let a = e.poll_transmit(t).unwrap().message.unwrap();
    assert_eq!(a.ack.unwrap().ranges, vec![(1, 2)]);
}
