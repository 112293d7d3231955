//! Durable sessions (issue 6): snapshots and restores of the engine.
//!
//! A small deterministic harness plays the runtime: it keeps a model store (what a durable
//! runtime records: first transmissions and acknowledgements on the source side; received
//! messages — before they reach the engine —, deliveries and the reply cache on the
//! destination side), loses messages on a seeded lossy link, and at seeded moments "crashes"
//! the client or the service: the engine is thrown away and rebuilt from the model store with
//! `ClientSession::resume` / `Endpoint::restore_session`. Every run must deliver every message
//! to the application exactly once and in order.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wsrm_proto::msg::{Body, Message, RmVersion, SequenceId};
use wsrm_proto::ranges::RangeSet;
use wsrm_proto::snapshot::{DestSnapshot, RestoreError, SnapshotMessage, SourceSnapshot};
use wsrm_proto::{
    ClientConfig, ClientEvent, ClientSession, ClientState, Endpoint, EndpointConfig, ExchangeId,
    Pattern, ServerEvent, Shape,
};

/// The destination side of the model store.
#[derive(Default)]
struct DestStore {
    id: Option<SequenceId>,
    ranges: RangeSet,
    pending: BTreeMap<u64, Bytes>,
    last: Option<u64>,
}

impl DestStore {
    fn delivered_through(&self) -> u64 {
        let prefix = self.ranges.contiguous_prefix();
        match self.pending.keys().next() {
            Some(&p) => prefix.min(p - 1),
            None => prefix,
        }
    }

    fn snapshot(&self, version: RmVersion) -> Option<DestSnapshot> {
        let mut s = DestSnapshot::new(self.id.clone()?, version);
        s.ranges = self.ranges.ranges().to_vec();
        s.last_number = self.last;
        s.delivered_through = self.delivered_through();
        s.undelivered = self
            .pending
            .iter()
            .map(|(&number, p)| SnapshotMessage {
                number,
                action: Arc::from("urn:test"),
                payload: p.clone(),
                message_id: None,
            })
            .collect();
        Some(s)
    }
}

/// The source side of the model store.
#[derive(Default)]
struct SourceStore {
    id: Option<SequenceId>,
    next: u64,
    unacked: BTreeMap<u64, Bytes>,
}

struct Harness {
    rng: SmallRng,
    now: Instant,
    version: RmVersion,
    client: ClientSession,
    ep: Endpoint,
    src: SourceStore,
    /// Every inbound sequence the service created (a lost CreateSequenceResponse makes the
    /// client retry, and a one-way endpoint creates a second sequence it never uses).
    dests: BTreeMap<SequenceId, DestStore>,
    /// Input lines taken (the `wsrm send` cursor) = highest number recorded.
    cursor: u64,
    delivered: Vec<u64>,
    sessions: BTreeMap<wsrm_proto::SessionId, SequenceId>,
    next_ex: u64,
    loss: f64,
    restores: u32,
}

fn client_cfg(version: RmVersion) -> ClientConfig {
    let mut c = ClientConfig::new(Pattern::OneWay, Shape::RequestReply);
    c.settings.reliable_messaging_version = version;
    c.settings.max_retry_count = 1000;
    c
}

fn endpoint(version: RmVersion, seed: u64) -> Endpoint {
    let mut cfg = EndpointConfig::default();
    cfg.settings.reliable_messaging_version = version;
    Endpoint::new(cfg, seed).expect("endpoint")
}

fn payload(n: u64) -> Bytes {
    Bytes::from(format!("<m>{n}</m>"))
}

impl Harness {
    fn new(version: RmVersion, seed: u64, loss: f64) -> Self {
        let now = Instant::now();
        Harness {
            rng: SmallRng::seed_from_u64(seed),
            now,
            version,
            client: ClientSession::new(now, client_cfg(version), seed).expect("client"),
            ep: endpoint(version, seed ^ 0x55),
            src: SourceStore {
                next: 1,
                ..SourceStore::default()
            },
            dests: BTreeMap::new(),
            cursor: 0,
            delivered: Vec::new(),
            sessions: BTreeMap::new(),
            next_ex: 0,
            loss,
            restores: 0,
        }
    }

    fn lost(&mut self) -> bool {
        self.rng.random_bool(self.loss)
    }

    /// The service's runtime: store a sequence message before the engine sees it.
    fn service_input(&mut self, m: Message) -> Option<Message> {
        if let Some(seq) = &m.sequence {
            if let Some(dst) = self.dests.get_mut(&seq.identifier) {
                let n = seq.number;
                if n > 0 && !dst.ranges.contains(n) {
                    dst.ranges.insert(n);
                    match &m.body {
                        Body::Application(b) => {
                            dst.pending.insert(n, b.clone());
                        }
                        _ => {
                            // The empty 1.0 LastMessage: delivered at once.
                        }
                    }
                    if seq.last_message {
                        dst.last = Some(n);
                    }
                }
            }
        }
        self.next_ex += 1;
        let ex = ExchangeId(self.next_ex);
        self.ep.handle_message(self.now, m, Some(ex));
        self.service_events();
        common::answer_of(&mut self.ep, self.now, ex)
    }

    fn service_events(&mut self) {
        while let Some(ev) = self.ep.poll_event() {
            match ev {
                ServerEvent::SessionCreated { session, input, .. } => {
                    self.ep.accept(session);
                    self.sessions.insert(session, input.clone());
                    self.dests
                        .entry(input.clone())
                        .or_insert_with(|| DestStore {
                            id: Some(input),
                            ..DestStore::default()
                        });
                }
                ServerEvent::Delivery {
                    session,
                    number,
                    payload: p,
                    ..
                } => {
                    // The application commits the delivery (inbox) right away.
                    assert_eq!(p, payload(number), "payload of {number}");
                    let dst = self
                        .sessions
                        .get(&session)
                        .and_then(|id| self.dests.get_mut(id))
                        .expect("delivery on a stored session");
                    assert!(
                        dst.pending.remove(&number).is_some(),
                        "delivery of {number} that is not pending (delivered twice)"
                    );
                    self.delivered.push(number);
                    self.ep.delivered(session, number);
                }
                _ => {}
            }
        }
    }

    /// The client's runtime: record first transmissions before they leave.
    fn client_step(&mut self) -> bool {
        let mut progressed = false;
        while let Some(m) = self.client.poll_transmit(self.now) {
            progressed = true;
            if let (Some(seq), Body::Application(b)) = (&m.sequence, &m.body) {
                let n = seq.number;
                if n >= self.src.next {
                    self.src.id = Some(seq.identifier.clone());
                    self.src.unacked.insert(n, b.clone());
                    self.src.next = n + 1;
                    self.cursor = n;
                }
            }
            if self.lost() {
                continue;
            }
            let answer = self.service_input(m);
            if let Some(a) = answer {
                if !self.lost() {
                    self.client.handle_message(self.now, a);
                }
            }
        }
        while let Some(ev) = self.client.poll_event() {
            progressed = true;
            match ev {
                ClientEvent::Opened { output, .. } => self.src.id = Some(output),
                ClientEvent::Acknowledged { number } => {
                    self.src.unacked.remove(&number);
                }
                ClientEvent::Failed { error, .. } => panic!("client failed: {error}"),
                _ => {}
            }
        }
        progressed
    }

    fn advance(&mut self) {
        common::advance(&mut self.now, &mut self.client, &mut self.ep);
        self.service_events();
    }

    fn crash_service(&mut self) {
        self.ep = endpoint(self.version, self.rng.random());
        self.sessions.clear();
        for d in self.dests.values() {
            if let Some(s) = d.snapshot(self.version) {
                self.ep.restore_session(self.now, s).expect("restore");
            }
        }
        self.service_events();
        self.restores += 1;
    }

    fn crash_client(&mut self) {
        let Some(id) = self.src.id.clone() else {
            return;
        };
        if self.src.next == 1 {
            return;
        }
        let snap = SourceSnapshot {
            id,
            version: self.version,
            next_number: self.src.next,
            unacknowledged: self
                .src
                .unacked
                .iter()
                .map(|(&number, p)| SnapshotMessage {
                    number,
                    action: Arc::from("urn:test"),
                    payload: p.clone(),
                    message_id: None,
                })
                .collect(),
            replies: None,
        };
        self.client =
            ClientSession::resume(self.now, client_cfg(self.version), snap, self.rng.random())
                .expect("resume");
        self.restores += 1;
    }

    /// Sends `total` messages with crashes at seeded moments, then closes.
    fn run(&mut self, total: u64, crash_every: u32) {
        let mut steps = 0u32;
        while self.delivered.len() < total as usize {
            steps += 1;
            assert!(
                steps < 200_000,
                "no progress: delivered {}",
                self.delivered.len()
            );
            // The application queues what the cursor says is not taken yet (a few at a time).
            let queued = self.client.next_number() - 1;
            if self.client.state() == ClientState::Open
                && queued < total
                && queued < self.cursor + 8
            {
                let n = self
                    .client
                    .send(self.now, Arc::from("urn:test"), payload(queued + 1));
                assert_eq!(n, Ok(queued + 1));
            }
            if !self.client_step() {
                self.advance();
            }
            if crash_every > 0 && self.rng.random_ratio(1, crash_every) {
                if self.rng.random_bool(0.5) {
                    self.crash_service();
                } else {
                    self.crash_client();
                }
            }
        }
        self.client.close(self.now).expect("close");
        for _ in 0..100_000 {
            if self.client.state() == ClientState::Closed {
                break;
            }
            if !self.client_step() {
                self.advance();
            }
        }
        assert_eq!(self.client.state(), ClientState::Closed);
        let expect: Vec<u64> = (1..=total).collect();
        assert_eq!(self.delivered, expect, "exactly once, in order");
        assert!(self.dests.values().all(|d| d.pending.is_empty()));
    }
}

#[test]
fn restores_mid_session_deliver_exactly_once_in_order() {
    for version in [RmVersion::Wsrm10, RmVersion::Wsrm11] {
        let mut total_restores = 0;
        for seed in 0..40 {
            let mut h = Harness::new(version, seed, 0.15);
            h.run(60, 15);
            total_restores += h.restores;
        }
        assert!(
            total_restores >= 80,
            "{version}: only {total_restores} restores"
        );
    }
}

#[test]
fn restore_without_loss_or_crash_is_plain_session() {
    let mut h = Harness::new(RmVersion::Wsrm11, 7, 0.0);
    h.run(30, 0);
    assert_eq!(h.restores, 0);
}

#[test]
fn restored_destination_redelivers_pending_in_order_and_acks_stored_ranges() {
    let mut ep = endpoint(RmVersion::Wsrm11, 1);
    let mut s = DestSnapshot::new(SequenceId::from("urn:uuid:restored"), RmVersion::Wsrm11);
    s.ranges = vec![(1, 5), (7, 7)];
    s.delivered_through = 3;
    s.undelivered = [4u64, 5, 7]
        .iter()
        .map(|&n| SnapshotMessage {
            number: n,
            action: Arc::from("urn:a"),
            payload: payload(n),
            message_id: None,
        })
        .collect();
    let sid = ep
        .restore_session(Instant::now(), s.clone())
        .expect("restore");
    let mut got = Vec::new();
    while let Some(ev) = ep.poll_event() {
        if let ServerEvent::Delivery { number, .. } = ev {
            got.push(number);
        }
    }
    // 7 waits behind the gap at 6.
    assert_eq!(got, vec![4, 5]);
    // A second restore of the same sequence is refused.
    assert_eq!(
        ep.restore_session(Instant::now(), s).unwrap_err(),
        RestoreError::Exists(SequenceId::from("urn:uuid:restored"))
    );
    // A retransmitted 2 is a duplicate: acknowledged with the stored ranges, not delivered.
    let mut m = Message::new(
        RmVersion::Wsrm11,
        wsrm_proto::msg::Action::Other(Arc::from("urn:a")),
        Body::Application(payload(2)),
    );
    m.sequence = Some(wsrm_proto::msg::SequenceHeader {
        identifier: SequenceId::from("urn:uuid:restored"),
        number: 2,
        last_message: false,
    });
    ep.accept(sid);
    ep.handle_message(Instant::now(), m.clone(), Some(ExchangeId(1)));
    let t = ep.poll_transmit(Instant::now()).expect("answer");
    assert_eq!(t.exchange, Some(ExchangeId(1)));
    let ack = t.message.expect("ack").ack.expect("ack header");
    assert_eq!(ack.ranges, vec![(1, 5), (7, 7)]);
    assert!(ep.poll_event().is_none());
    // 6 fills the gap: 6 and 7 are delivered, in order.
    m.sequence.as_mut().expect("seq").number = 6;
    m.body = Body::Application(payload(6));
    ep.handle_message(Instant::now(), m, Some(ExchangeId(2)));
    let mut got = Vec::new();
    while let Some(ev) = ep.poll_event() {
        if let ServerEvent::Delivery { number, .. } = ev {
            got.push(number);
        }
    }
    assert_eq!(got, vec![6, 7]);
}

#[test]
fn resume_rejects_bad_snapshots() {
    let snap = |next, nums: &[u64], version| SourceSnapshot {
        id: SequenceId::from("urn:uuid:s"),
        version,
        next_number: next,
        unacknowledged: nums
            .iter()
            .map(|&n| SnapshotMessage {
                number: n,
                action: Arc::from("urn:a"),
                payload: payload(n),
                message_id: None,
            })
            .collect(),
        replies: None,
    };
    let now = Instant::now();
    let cfg = client_cfg(RmVersion::Wsrm10);
    assert!(matches!(
        ClientSession::resume(now, cfg.clone(), snap(5, &[3, 2], RmVersion::Wsrm10), 1),
        Err(RestoreError::Invalid(_))
    ));
    assert!(matches!(
        ClientSession::resume(now, cfg.clone(), snap(3, &[3], RmVersion::Wsrm10), 1),
        Err(RestoreError::Invalid(_))
    ));
    assert!(matches!(
        ClientSession::resume(now, cfg.clone(), snap(0, &[], RmVersion::Wsrm10), 1),
        Err(RestoreError::Invalid(_))
    ));
    assert!(matches!(
        ClientSession::resume(now, cfg.clone(), snap(3, &[1], RmVersion::Wsrm11), 1),
        Err(RestoreError::VersionMismatch { .. })
    ));
    let rr = ClientConfig::new(Pattern::RequestReply, Shape::RequestReply);
    assert!(matches!(
        ClientSession::resume(now, rr, snap(3, &[1], RmVersion::Wsrm10), 1),
        Err(RestoreError::UnsupportedPattern)
    ));
    // A good one: open at once, retransmits 2 and 4 (3 counts as acknowledged), then numbers
    // new messages from 5.
    let mut c =
        ClientSession::resume(now, cfg, snap(5, &[2, 4], RmVersion::Wsrm10), 1).expect("resume");
    assert_eq!(c.state(), ClientState::Open);
    assert!(matches!(c.poll_event(), Some(ClientEvent::Opened { .. })));
    let mut sent = Vec::new();
    while let Some(m) = c.poll_transmit(now) {
        if let Some(s) = m.sequence {
            sent.push(s.number);
        }
    }
    assert_eq!(sent, vec![2, 4]);
    assert_eq!(c.send(now, Arc::from("urn:a"), payload(5)), Ok(5));
}

/// Deviation 11: a durable client that gives up (MaxRetryCount) keeps its sequence resumable:
/// with `terminate_on_retry_exhausted = false` no SequenceTerminated fault goes out; with the
/// WCF default it does.
#[test]
fn retry_exhaustion_without_termination_keeps_the_sequence() {
    for terminate in [true, false] {
        let mut cfg = client_cfg(RmVersion::Wsrm11);
        cfg.settings.max_retry_count = 3;
        cfg.terminate_on_retry_exhausted = terminate;
        let snap = SourceSnapshot {
            id: SequenceId::from("urn:uuid:kept"),
            version: RmVersion::Wsrm11,
            next_number: 2,
            unacknowledged: vec![SnapshotMessage {
                number: 1,
                action: Arc::from("urn:a"),
                payload: payload(1),
                message_id: None,
            }],
            replies: None,
        };
        let mut now = Instant::now();
        let mut c = ClientSession::resume(now, cfg, snap, 3).expect("resume");
        let mut faults = 0;
        let mut sends = 0;
        for _ in 0..100 {
            while let Some(m) = c.poll_transmit(now) {
                if matches!(m.body, Body::Fault(_)) {
                    faults += 1;
                } else if m.sequence.is_some() {
                    sends += 1;
                }
            }
            if c.state() == ClientState::Failed {
                break;
            }
            now = c.poll_timeout().expect("deadline").max(now);
            c.handle_timeout(now);
        }
        assert_eq!(c.state(), ClientState::Failed);
        assert_eq!(sends, 4, "first transmission + MaxRetryCount retries");
        assert_eq!(faults, usize::from(terminate), "terminate = {terminate}");
    }
}
