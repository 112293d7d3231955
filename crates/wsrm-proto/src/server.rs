//! The responder side ([`Endpoint`]): a listener with all its sessions, demultiplexed by
//! sequence identifier (wire-protocol.md §4.13), CreateSequence validation and refusal (§2.5,
//! §4.4), MaxPendingChannels and a cap on established sessions, the RM Destination per session,
//! request-reply reply caching and replay over HTTP exchanges (§4.11), and the duplex outbound
//! sequence (§4.12).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::dest::{Delivered, DeliverySink, Destination, Incoming};
use crate::inbound::Inbound;
use crate::msg::{
    AckHeader, Action, Body, CreateSequence, CreateSequenceResponse, Fault, FaultCode, FaultDetail,
    FaultKind, Message, RmVersion, SequenceHeader, SequenceId,
};
use crate::outbound::{new_urn, Outbound};
use crate::settings::{Settings, SettingsError};
use crate::source::{Source, SourceFailure, UNKNOWN_INITIATION_TIME};
use crate::types::{
    ExchangeId, Pattern, ReplyToken, SendError, ServerEvent, ServerTransmit, SessionError,
    SessionId, SessionStats, WSA10_ANONYMOUS,
};

/// FxHash (rustc's hasher) for maps whose stored keys the endpoint chooses itself (session
/// numbers, server-minted sequence ids): lookups of peer-chosen keys cannot cause collisions
/// among stored keys, so SipHash's HashDoS protection is not needed there.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let word = |c: &[u8]| <[u8; 8]>::try_from(c).map_or(0, u64::from_le_bytes);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(word(c));
        }
        // The tail in one word (a server-minted identifier is 45 bytes: a byte at a time this
        // was five more rounds per lookup): the last eight bytes, overlapping the chunk before,
        // or the bytes of a shorter key.
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let w = match bytes.len().checked_sub(8) {
                Some(start) => bytes.get(start..).map_or(0, word),
                None => rest
                    .iter()
                    .enumerate()
                    .fold(0, |w, (i, &b)| w | u64::from(b) << (8 * i)),
            };
            self.write_u64(w);
        }
    }
    fn write_u8(&mut self, i: u8) {
        // (`str` hashes end with one: not through the slice loop.)
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

/// Configuration of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The eight reliable-session settings (the version is the one used when `version` is
    /// `Some`; otherwise each client is answered in its own version).
    pub settings: Settings,
    /// Accept only this RM version (`None`: both).
    pub version: Option<RmVersion>,
    /// Accept one-way sessions (CreateSequence without Offer).
    pub accept_one_way: bool,
    /// Accept request-reply sessions (Offer, CreateSequence on an HTTP exchange).
    pub accept_request_reply: bool,
    /// Accept duplex sessions (Offer, CreateSequence without exchange).
    pub accept_duplex: bool,
    /// Cap on established sessions (accepted or not); beyond it CreateSequence is refused as
    /// "server too busy".
    pub max_sessions: usize,
    /// This endpoint's address, written as `Accept/AcksTo` (default: the CS's `To`).
    pub address: Option<Arc<str>>,
    /// A parked HTTP exchange (request whose reply is not produced yet) is answered with an
    /// empty 202 after this long.
    pub parked_exchange_timeout: Duration,
    /// Cap on parked exchanges across the endpoint; beyond it requests are answered 202 at once.
    pub max_parked_exchanges: usize,
    /// Whether a message counts as taken by the application (a free buffer slot again, in
    /// `netrm:BufferRemaining`) as soon as its [`ServerEvent::Delivery`] is emitted, for a
    /// runtime whose own receive queue is the application's (bounded elsewhere, e.g. in
    /// bytes). The acknowledgement answering the message then already counts it as taken,
    /// so a destination of window 1 does not advertise a full buffer after every message.
    /// `false` (default): the application releases each message with [`Endpoint::delivered`],
    /// and BufferRemaining counts the messages it has not taken yet (WCF's `EnqueuedCount`).
    /// Either way, messages held out of order count until they are delivered.
    pub release_on_delivery: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            settings: Settings::default(),
            version: None,
            accept_one_way: true,
            accept_request_reply: true,
            accept_duplex: true,
            max_sessions: 10_000,
            address: None,
            parked_exchange_timeout: Duration::from_secs(60),
            max_parked_exchanges: 65_536,
            release_on_delivery: false,
        }
    }
}

#[derive(Debug)]
enum ReqState {
    /// Delivered, reply not produced yet; maybe an exchange waiting for it.
    Pending {
        message_id: Option<Arc<str>>,
        parked: Option<(ExchangeId, Instant)>,
    },
    /// Reply produced, cached until the reply sequence acknowledges it.
    Replied { reply: Box<Message> },
}

#[derive(Debug)]
struct Session {
    id: SessionId,
    version: RmVersion,
    pattern: Pattern,
    http: bool,
    accepted: bool,
    inbound: Inbound,
    outbound: Option<Outbound>,
    offer: Option<SequenceId>,
    peer: Option<Arc<str>>,
    csr: Message,
    inactivity: Duration,
    inactivity_deadline: Instant,
    // request-reply
    requests: HashMap<u64, ReqState>,
    unacked_replies: BTreeMap<u64, u64>,
    next_reply: u64,
    /// Two-way requests received ahead of a gap (admitted, not delivered yet) whose HTTP
    /// exchange waits for the reply (docs/engine.md, deviation 10).
    buffered_requests: HashMap<u64, (ExchangeId, Instant)>,
    /// 1.0: the LastMessage request (number, parked exchange) waiting for pending replies.
    pending_last: Option<(u64, Option<(ExchangeId, Instant)>)>,
    last_reply: Option<(u64, Message)>,
    max_window: u32,
    armed: Option<Instant>,
    queued: bool,
    tx: VecDeque<Message>,
    /// Closed cleanly; kept (answering retransmissions with acks/responses) until inactive.
    ended: bool,
}

/// Where the answer to the message being handled goes.
struct Answer {
    exchange: Option<ExchangeId>,
    message: Option<Message>,
    parked: bool,
}

/// The one-way fast path's delivery sink: each released message is queued as the
/// `Delivery` event the general path makes of it.
struct EventSink<'a> {
    events: &'a mut VecDeque<ServerEvent>,
    session: SessionId,
}

impl DeliverySink for EventSink<'_> {
    #[inline]
    fn deliver(&mut self, d: Delivered) {
        self.events.push_back(ServerEvent::Delivery {
            session: self.session,
            number: d.number,
            action: action_text(d.action),
            payload: d.payload,
            reply: None,
        });
    }
}

/// A reliable-messaging listener and all its sessions. Sans-IO.
#[derive(Debug)]
pub struct Endpoint {
    cfg: EndpointConfig,
    rng: SmallRng,
    sessions: HashMap<SessionId, Box<Session>, FxBuild>,
    by_input: HashMap<SequenceId, SessionId, FxBuild>,
    by_output: HashMap<SequenceId, SessionId>,
    next_session: u64,
    pending_count: usize,
    parked_count: usize,
    ended_count: usize,
    /// Cleanly closed sessions kept for late retransmissions, oldest first (capped at
    /// `max_sessions`).
    ended_order: VecDeque<SessionId>,
    timers: BinaryHeap<Reverse<(Instant, SessionId)>>,
    ready: VecDeque<SessionId>,
    out: VecDeque<ServerTransmit>,
    events: VecDeque<ServerEvent>,
    scratch: Vec<Delivered>,
    /// Tests only: every message takes the general path (to compare the fast path with it).
    #[cfg(test)]
    general_only: bool,
}

fn standalone_ack(version: RmVersion, ack: AckHeader) -> Message {
    let mut m = Message::new(version, Action::SequenceAcknowledgement, Body::Empty);
    m.ack = Some(ack);
    m
}

fn fault_msg(version: RmVersion, f: Fault, relates_to: Option<Arc<str>>) -> Message {
    let mut m = Message::new(version, Action::Fault, Body::Fault(Box::new(f)));
    m.relates_to = relates_to;
    m
}

/// A delivered message's application action (moved out: no reference count taken and
/// released per delivery).
fn action_text(a: Action) -> Arc<str> {
    match a {
        Action::Other(s) => s,
        _ => Arc::from(""),
    }
}

impl Session {
    fn stats(&self) -> SessionStats {
        let (c, w, rtt) = match &self.outbound {
            Some(o) => (o.src.counters, o.src.window_size, o.src.rtt()),
            None => (Default::default(), 0, Duration::ZERO),
        };
        SessionStats {
            sent: c.sent + (self.next_reply - 1),
            retransmitted: c.retransmitted,
            acknowledged: c.acknowledged,
            duplicates_dropped: self.inbound.dest.duplicates,
            delivered: self.inbound.dest.delivered,
            dropped: self.inbound.dest.dropped,
            window_size: w,
            rtt,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.inactivity_deadline);
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |y: Instant| y.min(x)));
            }
        };
        min(self.inbound.poll_timeout());
        if let Some(o) = &self.outbound {
            min(o.poll_timeout());
        }
        for r in self.requests.values() {
            if let ReqState::Pending {
                parked: Some((_, d)),
                ..
            } = r
            {
                min(Some(*d));
            }
        }
        for (_, d) in self.buffered_requests.values() {
            min(Some(*d));
        }
        if let Some((_, Some((_, d)))) = &self.pending_last {
            min(Some(*d));
        }
        t
    }

    fn has_transmit(&self, now: Instant) -> bool {
        !self.tx.is_empty()
            || self.inbound.ack_due(now)
            || self
                .outbound
                .as_ref()
                .is_some_and(|o| o.src.has_pending_transmit() || o.control_due(now))
    }

    fn ack(&self) -> AckHeader {
        self.inbound.dest.ack_header()
    }

    fn stamp(&self, mut m: Message) -> Message {
        if m.to.is_none() {
            m.to = self.peer.clone();
        }
        m
    }
}

impl Endpoint {
    /// A new endpoint; `seed` seeds identifier generation.
    pub fn new(cfg: EndpointConfig, seed: u64) -> Result<Self, SettingsError> {
        cfg.settings.validate()?;
        Ok(Endpoint {
            cfg,
            rng: SmallRng::seed_from_u64(seed),
            sessions: HashMap::default(),
            by_input: HashMap::default(),
            by_output: HashMap::new(),
            next_session: 1,
            pending_count: 0,
            parked_count: 0,
            ended_count: 0,
            ended_order: VecDeque::new(),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            #[cfg(test)]
            general_only: false,
        })
    }

    /// Number of live (not yet ended) sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len() - self.ended_count
    }

    /// Counters of a session.
    pub fn stats(&self, session: SessionId) -> Option<SessionStats> {
        self.sessions.get(&session).map(|s| s.stats())
    }

    /// Marks a session as accepted by the service (it no longer counts against
    /// MaxPendingChannels).
    pub fn accept(&mut self, session: SessionId) -> bool {
        match self.sessions.get_mut(&session) {
            Some(s) if !s.accepted => {
                s.accepted = true;
                self.pending_count = self.pending_count.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// The application has taken (committed) message `number`: frees a buffer slot
    /// (BufferRemaining). A duplex destination whose buffer was full sends a fresh ack at once.
    /// Returns whether the message was waiting to be taken: always `false` with
    /// [`EndpointConfig::release_on_delivery`], where every delivery counts as taken at once.
    pub fn delivered(&mut self, session: SessionId, number: u64) -> bool {
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        let (removed, reopened) = s.inbound.dest.release(number);
        if reopened && !s.http {
            s.inbound.ack_immediately();
            self.mark_ready(session);
        }
        removed
    }

    /// The application's own queue for `session` holds `held` delivered messages beyond what
    /// it takes freely (a runtime using [`EndpointConfig::release_on_delivery`] whose handler
    /// falls behind): BufferRemaining is lowered by `held`, so a source with flow control
    /// stops sending and polls (§4.8) until the application catches up, instead of filling
    /// the runtime's queue. `0` when it has caught up. A duplex destination whose buffer
    /// reopens sends a fresh ack at once.
    pub fn set_backlog(&mut self, session: SessionId, held: u32) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.inbound.dest.set_backlog(held) && !s.http {
            s.inbound.ack_immediately();
            self.mark_ready(session);
        }
    }

    fn mark_ready(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            if !s.queued {
                s.queued = true;
                self.ready.push_back(id);
            }
        }
    }

    fn rearm(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get_mut(&id) {
            Self::rearm_session(s, &mut self.timers);
        }
    }

    /// [`Endpoint::rearm`] for a session the caller already holds.
    #[inline]
    fn rearm_session(s: &mut Session, timers: &mut BinaryHeap<Reverse<(Instant, SessionId)>>) {
        // Lazy: keep an earlier heap entry (it fires, finds nothing due, and re-arms), so
        // moving a deadline later costs nothing and the heap holds ~1 entry per session.
        let t = s.poll_timeout();
        let push = match (t, s.armed) {
            (Some(t), Some(a)) => t < a,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if push {
            s.armed = t;
            if let Some(t) = t {
                timers.push(Reverse((t, s.id)));
            }
        }
    }

    fn answer(&mut self, a: Answer, session: Option<SessionId>) {
        if a.parked {
            return;
        }
        match a.exchange {
            Some(ex) => self.out.push_back(ServerTransmit {
                exchange: Some(ex),
                session,
                message: a.message,
            }),
            None => {
                if let Some(m) = a.message {
                    self.out.push_back(ServerTransmit {
                        exchange: None,
                        session,
                        message: Some(m),
                    });
                }
            }
        }
    }

    /// Processes one inbound message. `exchange` identifies the HTTP request it came on
    /// (`None` for duplex transports); every exchange gets exactly one [`ServerTransmit`].
    pub fn handle_message(&mut self, now: Instant, mut m: Message, exchange: Option<ExchangeId>) {
        if let Some(ex) = exchange {
            #[cfg(test)]
            let fast = !self.general_only;
            #[cfg(not(test))]
            let fast = true;
            if fast && self.one_way_http(now, &mut m, ex) {
                return;
            }
        }
        let mut a = Answer {
            exchange,
            message: None,
            parked: false,
        };
        if let Body::CreateSequence(cs) = &m.body {
            let cs = CreateSequence::clone(cs);
            let sid = self.handle_create_sequence(now, &m, cs, &mut a);
            self.answer(a, sid);
            if let Some(id) = sid {
                self.rearm(id);
            }
            return;
        }
        let Some((sid, unknown)) = self.demux(&m) else {
            // No RM identifier at all.
            let version = m.version;
            let is_rm = !matches!(m.action, Action::Other(_));
            if !is_rm {
                let f = match version {
                    RmVersion::Wsrm11 => Fault::new(
                        FaultCode::Sender,
                        FaultKind::WsrmRequired,
                        "The RM server requires the use of WS-ReliableMessaging 1.1 protocol. This is likely caused by a binding mismatch.",
                        FaultDetail::None,
                    ),
                    RmVersion::Wsrm10 => Fault::new(
                        FaultCode::Sender,
                        FaultKind::ActionNotSupported,
                        "The message action is not supported by this endpoint.",
                        FaultDetail::None,
                    ),
                };
                a.message = Some(fault_msg(version, f, m.message_id.clone()));
            }
            self.answer(a, None);
            return;
        };
        let Some(sid) = sid else {
            if let Some(id) = unknown {
                let f = Fault::unknown_sequence(&id);
                if !matches!(m.body, Body::Fault(_)) {
                    a.message = Some(fault_msg(m.version, f, m.message_id.clone()));
                }
            }
            self.answer(a, None);
            return;
        };
        self.session_message(now, sid, &m, &mut a);
        self.answer(a, Some(sid));
        self.after(sid);
    }

    /// The fast path of [`Endpoint::handle_message`] for the per-message case of a one-way
    /// session over HTTP: an application message of the session's sequence, carrying no
    /// acknowledgement, on an HTTP exchange. Returns false (having changed nothing) for any
    /// other message, which then takes the general path.
    ///
    /// Why: the general path takes the session out of the map and puts it back (a hash-map
    /// removal and insertion per message), looks for every identifier the message might name,
    /// clones the application action, payload and MessageID into the delivery (the message is
    /// dropped right after), and moves the answer through two intermediate values (a message is
    /// ~360 bytes, each move a `memcpy`). Here the session is borrowed in place and the answer
    /// is built where it is queued. The outcome is exactly the general path's for these
    /// messages (same answer, events, session state and timer; `tests::fast_path_*` drive both
    /// paths on the same inputs and compare everything observable).
    fn one_way_http(&mut self, now: Instant, m: &mut Message, ex: ExchangeId) -> bool {
        if m.ack.is_some() || !matches!(m.body, Body::Application(_)) {
            return false;
        }
        let Some(seq) = &m.sequence else {
            return false;
        };
        // The first identifier `demux` tries: a known sequence identifier decides the session.
        let Some(&sid) = self.by_input.get(&seq.identifier) else {
            return false;
        };
        let n = seq.number;
        let Endpoint {
            sessions,
            events,
            out,
            ready,
            timers,
            ..
        } = self;
        let Some(s) = sessions.get_mut(&sid) else {
            return false;
        };
        // (`by_input` maps the session's inbound identifier, so the message is on `s`'s
        // sequence; a terminated session may be a tombstone and is left to the general path.)
        if !s.http || s.pattern != Pattern::OneWay || s.outbound.is_some() || s.inbound.terminated {
            return false;
        }
        s.inactivity_deadline = now + s.inactivity;
        let v = s.version;
        // Released messages become `Delivery` events as they are released (the endpoint is
        // split-borrowed).
        let mut sink = EventSink {
            events,
            session: sid,
        };
        let r = s.inbound.dest.on_owned_message(n, m, true, &mut sink);
        let answer = match r {
            Incoming::Accepted | Incoming::Duplicate | Incoming::Dropped => None,
            Incoming::Closed(f) => {
                let mut fm = fault_msg(v, f, m.message_id.clone());
                if m.ack_requested.is_some() {
                    fm.ack = Some(s.ack());
                }
                Some(Ok(fm))
            }
            Incoming::Violation(f) => {
                let fm = fault_msg(v, f.clone(), m.message_id.clone());
                Some(Err((fm, SessionError::ProtocolViolation(f))))
            }
        };
        let message = match answer {
            // The standalone acknowledgement, written where it is queued.
            None => {
                out.push_back(ServerTransmit {
                    exchange: Some(ex),
                    session: Some(sid),
                    message: Some(Message {
                        version: v,
                        action: Action::SequenceAcknowledgement,
                        message_id: None,
                        relates_to: None,
                        reply_to: None,
                        to: None,
                        sequence: None,
                        ack: Some(s.ack()),
                        ack_requested: None,
                        body: Body::Empty,
                    }),
                });
                None
            }
            Some(Ok(fm)) => Some(fm),
            Some(Err((fm, e))) => {
                // As the general path: the session ends before its answer is queued.
                self.finish(sid, Some(e));
                self.out.push_back(ServerTransmit {
                    exchange: Some(ex),
                    session: Some(sid),
                    message: Some(fm),
                });
                self.after(sid);
                return true;
            }
        };
        if let Some(fm) = message {
            out.push_back(ServerTransmit {
                exchange: Some(ex),
                session: Some(sid),
                message: Some(fm),
            });
        }
        // `after`: an HTTP session without an outbound sequence is polled only for queued
        // messages.
        if !s.tx.is_empty() && !s.queued {
            s.queued = true;
            ready.push_back(sid);
        }
        Self::rearm_session(s, timers);
        true
    }

    /// `Some((Some(session), _))` known; `Some((None, Some(id)))` unknown id; `None` no id.
    fn demux(&self, m: &Message) -> Option<(Option<SessionId>, Option<SequenceId>)> {
        let fault_id = match &m.body {
            Body::Fault(f) => f.detail.identifier(),
            _ => None,
        };
        let body_input = match &m.body {
            Body::TerminateSequence { identifier, .. } | Body::CloseSequence { identifier, .. } => {
                Some(identifier)
            }
            _ => None,
        };
        let body_output = match &m.body {
            Body::TerminateSequenceResponse { identifier }
            | Body::CloseSequenceResponse { identifier } => Some(identifier),
            _ => None,
        };
        let input = [
            m.sequence.as_ref().map(|s| &s.identifier),
            m.ack_requested.as_ref(),
            body_input,
            fault_id,
        ];
        let output = [m.ack.as_ref().map(|a| &a.identifier), body_output, fault_id];
        for id in input.iter().flatten() {
            if let Some(s) = self.by_input.get(*id) {
                return Some((Some(*s), None));
            }
        }
        for id in output.iter().flatten() {
            if let Some(s) = self.by_output.get(*id) {
                return Some((Some(*s), None));
            }
        }
        let first = input.iter().chain(output.iter()).flatten().next()?;
        Some((None, Some((*first).clone())))
    }

    fn refuse(&mut self, m: &Message, code: FaultCode, kind: FaultKind, reason: &str) -> Message {
        let f = Fault::new(code, kind, reason, FaultDetail::None);
        fault_msg(m.version, f, m.message_id.clone())
    }

    fn handle_create_sequence(
        &mut self,
        now: Instant,
        m: &Message,
        cs: CreateSequence,
        a: &mut Answer,
    ) -> Option<SessionId> {
        let version = m.version;
        let Some(mid) = m.message_id.clone() else {
            a.message = Some(self.refuse(
                m,
                FaultCode::Sender,
                FaultKind::MessageAddressingHeaderRequired,
                "A required header representing a Message Addressing Property is not present: MessageID.",
            ));
            return None;
        };
        let refused = |_: &mut Self, reason: &str| {
            let f = Fault::create_sequence_refused(
                FaultCode::Sender,
                format!("The request to create a reliable session has been refused by the RM Destination. {reason} The channel could not be opened."),
            );
            fault_msg(version, f, Some(mid.clone()))
        };
        if self.cfg.version.is_some_and(|v| v != version) {
            a.message = Some(refused(
                self,
                "The WS-ReliableMessaging version is not supported.",
            ));
            return None;
        }
        let reply_to: Arc<str> = m
            .reply_to
            .clone()
            .unwrap_or_else(|| Arc::from(WSA10_ANONYMOUS));
        if *cs.acks_to != *reply_to {
            a.message = Some(refused(
                self,
                "The AcksTo address must equal the ReplyTo address.",
            ));
            return None;
        }
        if let Some(o) = &cs.offer {
            if version == RmVersion::Wsrm11 && o.endpoint.as_deref() != Some(&*cs.acks_to) {
                a.message = Some(refused(
                    self,
                    "The Offer Endpoint address must equal the AcksTo address.",
                ));
                return None;
            }
            // Duplicate CreateSequence (retry): answer with the same CSR.
            if let Some(&sid) = self.by_output.get(&o.identifier) {
                if let Some(s) = self.sessions.get(&sid) {
                    if s.csr.relates_to.as_ref() == Some(&mid) {
                        a.message = Some(s.csr.clone());
                        return Some(sid);
                    }
                }
                a.message = Some(refused(self, "The offered identifier is already in use."));
                return None;
            }
        }
        let http = a.exchange.is_some();
        let mut pattern = match (&cs.offer, http) {
            (None, _) => Pattern::OneWay,
            (Some(_), true) => Pattern::RequestReply,
            (Some(_), false) => Pattern::Duplex,
        };
        let accepted = match pattern {
            Pattern::OneWay => self.cfg.accept_one_way,
            Pattern::RequestReply => self.cfg.accept_request_reply,
            Pattern::Duplex => self.cfg.accept_duplex,
        };
        let mut offer = cs.offer.clone();
        if !accepted {
            if pattern != Pattern::OneWay && self.cfg.accept_one_way && version == RmVersion::Wsrm11
            {
                // 1.1 one-way endpoint: accept the sequence, reject the offer (no Accept).
                pattern = Pattern::OneWay;
                offer = None;
            } else {
                let reason = if pattern == Pattern::OneWay {
                    "This endpoint requires an Offer."
                } else {
                    "This endpoint does not accept an Offer."
                };
                a.message = Some(refused(self, reason));
                return None;
            }
        }
        if self.pending_count >= self.cfg.settings.max_pending_channels as usize
            || self.sessions.len() - self.ended_count >= self.cfg.max_sessions
        {
            let f = Fault::new(
                FaultCode::Receiver,
                FaultKind::ConnectionLimitReached,
                "The server is too busy to process this request. Try again later.",
                FaultDetail::None,
            );
            a.message = Some(fault_msg(version, f, Some(mid)));
            return None;
        }
        let s = &self.cfg.settings;
        let input = SequenceId::new(new_urn(&mut self.rng));
        let rr = pattern == Pattern::RequestReply;
        let mut dest = Destination::new(
            input.clone(),
            version,
            s.ordered,
            s.max_transfer_window_size,
            s.flow_control_enabled || rr,
            self.cfg.release_on_delivery,
        );
        // Over HTTP a request admitted ahead of a gap keeps its exchange until its reply
        // (deviation 10), so it need not be dropped as WCF does (`strict_in_order`).
        dest.strict_in_order = rr && s.ordered && !http;
        let inbound = Inbound::new(
            dest,
            !http,
            s.acknowledgement_interval,
            s.max_transfer_window_size,
        );
        let peer = (*reply_to != *WSA10_ANONYMOUS).then(|| reply_to.clone());
        let outbound = if pattern == Pattern::Duplex {
            let mut src = Source::new(
                version,
                s.max_transfer_window_size,
                s.max_retry_count,
                s.flow_control_enabled,
                true,
                true,
            );
            src.id = offer.as_ref().map(|o| o.identifier.clone());
            src.set_initial_rtt(UNKNOWN_INITIATION_TIME);
            src.set_max_rto(s.inactivity_timeout / 2 / s.max_retry_count.max(1));
            let local = self.cfg.address.clone().or_else(|| m.to.clone());
            Some(Outbound::new(src, local, false))
        } else {
            None
        };
        let accept_addr: Option<String> = offer.as_ref().map(|_| {
            self.cfg
                .address
                .clone()
                .or_else(|| m.to.clone())
                .map(|x| x.to_string())
                .unwrap_or_else(|| WSA10_ANONYMOUS.to_string())
        });
        let mut csr = Message::new(
            version,
            Action::CreateSequenceResponse,
            Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
                identifier: input.clone(),
                expires: cs.expires.clone(),
                incomplete_sequence_behavior: (version == RmVersion::Wsrm11)
                    .then(|| s.incomplete_sequence_behavior()),
                accept: accept_addr,
            })),
        );
        csr.relates_to = Some(mid);
        csr.to = peer.clone();
        let id = SessionId(self.next_session);
        self.next_session += 1;
        let offer_id = offer.map(|o| o.identifier);
        let session = Session {
            id,
            version,
            pattern,
            http,
            accepted: false,
            inbound,
            outbound,
            offer: offer_id.clone(),
            peer,
            csr: csr.clone(),
            inactivity: s.inactivity_timeout,
            inactivity_deadline: now + s.inactivity_timeout,
            requests: HashMap::new(),
            unacked_replies: BTreeMap::new(),
            next_reply: 1,
            buffered_requests: HashMap::new(),
            pending_last: None,
            last_reply: None,
            max_window: s.max_transfer_window_size,
            armed: None,
            queued: false,
            tx: VecDeque::new(),
            ended: false,
        };
        self.sessions.insert(id, Box::new(session));
        self.by_input.insert(input.clone(), id);
        if let Some(o) = &offer_id {
            self.by_output.insert(o.clone(), id);
        }
        self.pending_count += 1;
        a.message = Some(csr);
        self.events.push_back(ServerEvent::SessionCreated {
            session: id,
            pattern,
            version,
            input,
            output: offer_id,
        });
        Some(id)
    }

    fn session_message(&mut self, now: Instant, sid: SessionId, m: &Message, a: &mut Answer) {
        let Some(mut s) = self.sessions.remove(&sid) else {
            return;
        };
        s.inactivity_deadline = now + s.inactivity;
        let result = self.process(now, &mut s, m, a);
        let id = s.id;
        self.sessions.insert(id, s);
        match result {
            Ok(None) => {}
            Ok(Some(closed)) => {
                if closed {
                    self.finish(id, None);
                }
            }
            Err(e) => self.finish(id, Some(e)),
        }
    }

    /// `Ok(Some(true))` = session closed; `Err` = session failed.
    fn process(
        &mut self,
        now: Instant,
        s: &mut Session,
        m: &Message,
        a: &mut Answer,
    ) -> Result<Option<bool>, SessionError> {
        let v = s.version;
        let input_id = s.inbound.dest.id.clone();
        if let Body::Fault(f) = &m.body {
            let id = f.detail.identifier();
            if f.kind == FaultKind::UnknownSequence {
                if let (Some(o), Some(id)) = (s.outbound.as_mut(), id) {
                    if Some(id) == o.id() && o.on_terminate_response(None, true) {
                        return Ok(Some(Self::complete(s)));
                    }
                }
            }
            return Err(SessionError::RemoteFault(Fault::clone(f)));
        }
        // Acknowledgements for our outbound sequence.
        if let Some(ack) = &m.ack {
            if Some(&ack.identifier) == s.offer.as_ref() {
                if s.pattern == Pattern::RequestReply {
                    if let Err(f) = Self::reply_acks(s, ack) {
                        a.message = Some(fault_msg(v, f.clone(), m.message_id.clone()));
                        return Err(SessionError::ProtocolViolation(f));
                    }
                } else if let Some(o) = s.outbound.as_mut() {
                    let r = if ack.final_ack && v == RmVersion::Wsrm11 {
                        o.validate_final(ack)
                    } else {
                        Ok(())
                    };
                    let (events, session) = (&mut self.events, s.id);
                    let r = r.and_then(|_| {
                        o.src.handle_ack(now, ack, |number| {
                            events.push_back(ServerEvent::Acknowledged { session, number })
                        })
                    });
                    match r {
                        Ok(()) => {}
                        Err(f) => {
                            s.tx.push_back(fault_msg(v, f.clone(), None));
                            return Err(SessionError::ProtocolViolation(f));
                        }
                    }
                }
            }
        }
        if let Some(seq) = &m.sequence {
            if seq.identifier == input_id {
                self.sequence_message(now, s, m, seq, a)?;
            } else {
                a.message = Some(fault_msg(
                    v,
                    Fault::unknown_sequence(&seq.identifier),
                    m.message_id.clone(),
                ));
                return Ok(None);
            }
        }
        if m.ack_requested.as_ref() == Some(&input_id) {
            if s.http {
                if a.message.is_none() && !a.parked {
                    a.message = Some(standalone_ack(v, s.ack()));
                }
            } else {
                s.inbound.ack_immediately();
            }
        }
        match &m.body {
            Body::CloseSequence {
                identifier,
                last_msg_number,
            } if *identifier == input_id => {
                if s.pattern == Pattern::RequestReply && !Self::acks_replies(s, m) {
                    Self::release_unacknowledged_replies(s, None);
                }
                if s.pattern == Pattern::RequestReply && !s.unacked_replies.is_empty() {
                    let f = Fault::sequence_terminated(
                        FaultCode::Sender,
                        &input_id,
                        "The CloseSequence was received before all replies were acknowledged.",
                    );
                    self.send_fault(s, a, f.clone(), m);
                    return Err(SessionError::ProtocolViolation(f));
                }
                match s.inbound.dest.on_close(*last_msg_number) {
                    Ok(()) => {
                        let mut r = Message::new(
                            v,
                            Action::CloseSequenceResponse,
                            Body::CloseSequenceResponse {
                                identifier: input_id.clone(),
                            },
                        );
                        r.relates_to = m.message_id.clone();
                        r.ack = Some(s.ack());
                        self.respond(s, a, r);
                    }
                    Err(f) => {
                        self.send_fault(s, a, f.clone(), m);
                        return Err(SessionError::ProtocolViolation(f));
                    }
                }
            }
            Body::TerminateSequence {
                identifier,
                last_msg_number,
            } if *identifier == input_id => {
                return self.terminate(s, m, *last_msg_number, a);
            }
            Body::CloseSequenceResponse { identifier } if Some(identifier) == s.offer.as_ref() => {
                if let Some(o) = s.outbound.as_mut() {
                    if let Err(f) = o.on_close_response(
                        now,
                        m.relates_to.as_ref(),
                        m.ack.as_ref(),
                        &mut self.rng,
                    ) {
                        s.tx.push_back(fault_msg(v, f.clone(), None));
                        return Err(SessionError::ProtocolViolation(f));
                    }
                }
            }
            Body::TerminateSequenceResponse { identifier }
                if Some(identifier) == s.offer.as_ref() =>
            {
                if let Some(o) = s.outbound.as_mut() {
                    o.on_terminate_response(m.relates_to.as_ref(), false);
                }
            }
            _ => {}
        }
        Ok(Some(Self::complete(s)))
    }

    /// Whether the session is finished (inbound terminated and outbound done).
    fn complete(s: &Session) -> bool {
        let out_done = s.outbound.as_ref().is_none_or(|o| o.is_done());
        let in_done = s.inbound.terminated
            || (s.pattern == Pattern::Duplex
                && s.inbound.dest.complete()
                && s.version == RmVersion::Wsrm10);
        in_done && out_done
    }

    fn respond(&mut self, s: &mut Session, a: &mut Answer, m: Message) {
        if s.http && a.exchange.is_some() {
            a.message = Some(m);
        } else {
            s.tx.push_back(m);
        }
    }

    fn send_fault(&mut self, s: &mut Session, a: &mut Answer, f: Fault, m: &Message) {
        let fm = fault_msg(s.version, f, m.message_id.clone());
        self.respond(s, a, fm);
    }

    fn terminate(
        &mut self,
        s: &mut Session,
        m: &Message,
        last: Option<u64>,
        a: &mut Answer,
    ) -> Result<Option<bool>, SessionError> {
        let v = s.version;
        let input_id = s.inbound.dest.id.clone();
        if s.pattern == Pattern::RequestReply {
            if !Self::acks_replies(s, m) {
                Self::release_unacknowledged_replies(s, None);
            }
            let outstanding = s
                .unacked_replies
                .keys()
                .any(|n| s.last_reply.as_ref().map(|l| l.0) != Some(*n));
            let pending = s
                .requests
                .values()
                .any(|r| matches!(r, ReqState::Pending { .. }));
            if outstanding || pending {
                let f = Fault::sequence_terminated(
                    FaultCode::Sender,
                    &input_id,
                    "The TerminateSequence was received before all replies were acknowledged.",
                );
                self.send_fault(s, a, f.clone(), m);
                return Err(SessionError::ProtocolViolation(f));
            }
        }
        match s.inbound.dest.on_terminate(last) {
            Ok(clean) => {
                s.inbound.terminated = true;
                match v {
                    RmVersion::Wsrm10 => {
                        if s.pattern == Pattern::RequestReply {
                            if let Some(o) = &s.offer {
                                let mut r = Message::new(
                                    v,
                                    Action::TerminateSequence,
                                    Body::TerminateSequence {
                                        identifier: o.clone(),
                                        last_msg_number: None,
                                    },
                                );
                                r.ack = Some(s.ack());
                                self.respond(s, a, r);
                            }
                        }
                    }
                    RmVersion::Wsrm11 => {
                        let mut r = Message::new(
                            v,
                            Action::TerminateSequenceResponse,
                            Body::TerminateSequenceResponse {
                                identifier: input_id.clone(),
                            },
                        );
                        r.relates_to = m.message_id.clone();
                        r.ack = Some(s.ack());
                        self.respond(s, a, r);
                    }
                }
                if !clean {
                    return Err(SessionError::ProtocolViolation(Fault::sequence_terminated(
                        FaultCode::Sender,
                        &input_id,
                        "The sequence was terminated with messages missing.",
                    )));
                }
                Ok(Some(Self::complete(s)))
            }
            Err(f) => {
                self.send_fault(s, a, f.clone(), m);
                Err(SessionError::ProtocolViolation(f))
            }
        }
    }

    fn reply_acks(s: &mut Session, ack: &AckHeader) -> Result<(), Fault> {
        let highest = s.next_reply - 1;
        for &(l, u) in &ack.ranges {
            if l == 0 || l > u || u > highest {
                return Err(Fault::invalid_acknowledgement(ack.clone()));
            }
        }
        for &(l, u) in &ack.ranges {
            let acked: Vec<u64> = s.unacked_replies.range(l..=u).map(|(k, _)| *k).collect();
            for n in acked {
                if let Some(req) = s.unacked_replies.remove(&n) {
                    s.requests.remove(&req);
                }
            }
        }
        Ok(())
    }

    /// Whether `m` acknowledges the reply (offered) sequence.
    fn acks_replies(s: &Session, m: &Message) -> bool {
        m.ack
            .as_ref()
            .is_some_and(|a| Some(&a.identifier) == s.offer.as_ref())
    }

    /// Peer quirk (gSOAP 2.8, docs/interop.md gSOAP quirk 16): a request-reply client that
    /// never acknowledges the offered reply sequence. WCF piggy-backs an acknowledgement of the
    /// reply sequence on every request once it has a reply, so a request without one while
    /// replies are outstanding comes from such a client. For it, the cached replies of earlier
    /// requests (`before`: requests numbered below it; `None`: all, used when the client
    /// closes or terminates, which a request-reply client does only once every request has
    /// its reply) are released instead of holding the reply window shut forever. Memory stays
    /// bounded by the window; a later retransmission of such a request gets a plain
    /// acknowledgement, as for a request whose reply was acknowledged.
    fn release_unacknowledged_replies(s: &mut Session, before: Option<u64>) {
        let last = s.last_reply.as_ref().map(|l| l.0);
        let released: Vec<(u64, u64)> = s
            .unacked_replies
            .iter()
            .filter(|(_, req)| {
                **req > 0
                    && Some(**req) != last
                    && before.is_none_or(|b| **req < b)
                    && matches!(s.requests.get(*req), Some(ReqState::Replied { .. }))
            })
            .map(|(r, q)| (*r, *q))
            .collect();
        for (reply, req) in &released {
            s.unacked_replies.remove(reply);
            s.requests.remove(req);
        }
        if !released.is_empty() {
            tracing::debug!(
                released = released.len(),
                "reply window: releasing replies the client does not acknowledge"
            );
        }
    }

    fn sequence_message(
        &mut self,
        now: Instant,
        s: &mut Session,
        m: &Message,
        seq: &SequenceHeader,
        a: &mut Answer,
    ) -> Result<(), SessionError> {
        let v = s.version;
        let n = seq.number;
        if s.pattern == Pattern::RequestReply
            && s.unacked_replies.len() >= s.max_window as usize
            && !Self::acks_replies(s, m)
        {
            Self::release_unacknowledged_replies(s, Some(n));
        }
        // Like the receive buffer (docs/engine.md, deviation 7): up to two windows of replies
        // may await their acknowledgement; concurrent requests on parallel connections carry
        // acks that lag by a few replies, and WCF's one-window limit dropped them.
        let admit = s.pattern != Pattern::RequestReply
            || s.unacked_replies.len() < 2 * s.max_window as usize;
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let r = s.inbound.dest.on_message(
            n,
            seq.last_message,
            &m.action,
            &m.body,
            m.message_id.as_ref(),
            admit,
            &mut out,
        );
        let rr = s.pattern == Pattern::RequestReply;
        let result = match r {
            Incoming::Accepted => {
                if !s.http {
                    s.inbound.note_accepted(now, m.ack_requested.is_some());
                }
                let mut delivered_now = false;
                for d in out.drain(..) {
                    let two_way = rr && d.message_id.is_some();
                    let reply = two_way.then_some(ReplyToken {
                        session: s.id,
                        request: d.number,
                    });
                    delivered_now |= d.number == n;
                    if two_way {
                        let parked = if d.number == n && a.exchange.is_some() {
                            self.park(now, a)
                        } else {
                            // Received ahead of a gap earlier: its exchange has been waiting.
                            s.buffered_requests.remove(&d.number)
                        };
                        s.requests.insert(
                            d.number,
                            ReqState::Pending {
                                message_id: d.message_id.clone(),
                                parked,
                            },
                        );
                    }
                    self.events.push_back(ServerEvent::Delivery {
                        session: s.id,
                        number: d.number,
                        action: action_text(d.action),
                        payload: d.payload,
                        reply,
                    });
                }
                if rr
                    && v == RmVersion::Wsrm10
                    && matches!(m.action, Action::LastMessage)
                    && seq.last_message
                {
                    // A newer LastMessage request supersedes an older parked one (202).
                    if let Some((_, Some((old, _)))) = s.pending_last.take() {
                        self.release_parked(s.id, old);
                    }
                    let parked = if a.exchange.is_some() {
                        self.park(now, a)
                    } else {
                        None
                    };
                    s.pending_last = Some((n, parked));
                    self.try_finish_last(s);
                }
                if rr
                    && s.http
                    && !delivered_now
                    && m.message_id.is_some()
                    && matches!(m.body, Body::Application(_))
                {
                    // A two-way request admitted ahead of a gap (deviation 7): its exchange
                    // waits for the reply instead of getting a bare ack now, so the reply does
                    // not have to wait for the client's retransmission timer (deviation 10).
                    if let Some(p) = self.park(now, a) {
                        if let Some((old, _)) = s.buffered_requests.insert(n, p) {
                            self.release_parked(s.id, old);
                        }
                    }
                }
                if s.http && !a.parked && a.message.is_none() {
                    a.message = Some(standalone_ack(v, s.ack()));
                }
                Ok(())
            }
            Incoming::Duplicate => {
                if s.http {
                    if rr {
                        self.duplicate_request(now, s, n, a);
                    } else {
                        a.message = Some(standalone_ack(v, s.ack()));
                    }
                } else {
                    s.inbound.ack_immediately();
                }
                Ok(())
            }
            Incoming::Dropped => {
                if s.http && !rr {
                    a.message = Some(standalone_ack(v, s.ack()));
                }
                Ok(())
            }
            Incoming::Closed(f) => {
                let mut fm = fault_msg(v, f, m.message_id.clone());
                if m.ack_requested.is_some() {
                    fm.ack = Some(s.ack());
                }
                if s.http {
                    a.message = Some(fm);
                } else {
                    s.inbound.ack_immediately();
                    s.tx.push_back(fm);
                }
                Ok(())
            }
            Incoming::Violation(f) => {
                self.send_fault(s, a, f.clone(), m);
                Err(SessionError::ProtocolViolation(f))
            }
        };
        self.scratch = out;
        result
    }

    /// Answers a parked exchange with 202 and no message (superseded by a newer copy, past the
    /// parked-exchange limit, or its session ended).
    fn release_parked(&mut self, session: SessionId, ex: ExchangeId) {
        self.parked_count -= 1;
        self.out.push_back(ServerTransmit {
            exchange: Some(ex),
            session: Some(session),
            message: None,
        });
    }

    fn park(&mut self, now: Instant, a: &mut Answer) -> Option<(ExchangeId, Instant)> {
        let ex = a.exchange?;
        if self.parked_count >= self.cfg.max_parked_exchanges {
            return None;
        }
        self.parked_count += 1;
        a.parked = true;
        Some((ex, now + self.cfg.parked_exchange_timeout))
    }

    fn duplicate_request(&mut self, now: Instant, s: &mut Session, n: u64, a: &mut Answer) {
        if let Some((ln, parked)) = s.pending_last.as_mut() {
            if *ln == n {
                let old = parked.take();
                if let Some((ex, _)) = old {
                    self.release_parked(s.id, ex);
                }
                let p = self.park(now, a);
                if let Some((_, parked)) = s.pending_last.as_mut() {
                    *parked = p;
                }
                return;
            }
        }
        if let Some((ln, reply)) = &s.last_reply {
            if *ln == n {
                let mut r = reply.clone();
                r.ack = Some(s.ack());
                a.message = Some(r);
                return;
            }
        }
        let ack = s.ack();
        match s.requests.get_mut(&n) {
            Some(ReqState::Pending { parked, .. }) => {
                // Supersede the older parked exchange with 202.
                if let Some((ex, _)) = parked.take() {
                    self.release_parked(s.id, ex);
                }
                let p = self.park(now, a);
                if let Some(ReqState::Pending { parked, .. }) = s.requests.get_mut(&n) {
                    *parked = p;
                }
            }
            Some(ReqState::Replied { reply }) => {
                let mut r = (**reply).clone();
                r.ack = Some(ack);
                a.message = Some(r);
            }
            None => {
                // Still buffered ahead of a gap: the newest copy's exchange waits instead
                // (the older one gets 202), as for a delivered request.
                if let Some((old, _)) = s.buffered_requests.remove(&n) {
                    self.release_parked(s.id, old);
                    if let Some(p) = self.park(now, a) {
                        s.buffered_requests.insert(n, p);
                        return;
                    }
                }
                a.message = Some(standalone_ack(s.version, ack));
            }
        }
    }

    /// 1.0 request-reply: answer the LastMessage request with the reply sequence's
    /// LastMessage once every earlier request has its reply.
    fn try_finish_last(&mut self, s: &mut Session) {
        let Some((n, _)) = s.pending_last else { return };
        let pending = s
            .requests
            .values()
            .any(|r| matches!(r, ReqState::Pending { .. }));
        if pending || !s.inbound.dest.complete() {
            return;
        }
        let Some((_, parked)) = s.pending_last.take() else {
            return;
        };
        let Some(offer) = s.offer.clone() else { return };
        let number = s.next_reply;
        s.next_reply += 1;
        let mut r = Message::new(s.version, Action::LastMessage, Body::Empty);
        r.sequence = Some(SequenceHeader {
            identifier: offer,
            number,
            last_message: true,
        });
        s.last_reply = Some((n, r.clone()));
        s.unacked_replies.insert(number, 0);
        if let Some((ex, _)) = parked {
            self.parked_count -= 1;
            r.ack = Some(s.ack());
            let r = s.stamp(r);
            self.out.push_back(ServerTransmit {
                exchange: Some(ex),
                session: Some(s.id),
                message: Some(r),
            });
        }
    }

    /// Answers a request-reply delivery with the application's reply. The reply gets the next
    /// reply-sequence number, rides the parked HTTP exchange (if any) and is cached until the
    /// client acknowledges it; a retransmitted request gets it again.
    pub fn reply(
        &mut self,
        _now: Instant,
        token: ReplyToken,
        action: Arc<str>,
        payload: Bytes,
    ) -> Result<u64, SendError> {
        let Some(mut s) = self.sessions.remove(&token.session) else {
            return Err(SendError::UnknownSession);
        };
        let r = self.reply_inner(&mut s, token, Some((action, payload)));
        self.sessions.insert(token.session, s);
        self.rearm(token.session);
        r
    }

    /// Completes a request-reply delivery without a reply (one-way operation): the waiting
    /// exchange gets a standalone acknowledgement.
    pub fn reply_none(&mut self, _now: Instant, token: ReplyToken) -> Result<(), SendError> {
        let Some(mut s) = self.sessions.remove(&token.session) else {
            return Err(SendError::UnknownSession);
        };
        let r = self.reply_inner(&mut s, token, None).map(|_| ());
        self.sessions.insert(token.session, s);
        self.rearm(token.session);
        r
    }

    fn reply_inner(
        &mut self,
        s: &mut Session,
        token: ReplyToken,
        content: Option<(Arc<str>, Bytes)>,
    ) -> Result<u64, SendError> {
        let Some(ReqState::Pending { message_id, parked }) = s.requests.remove(&token.request)
        else {
            return Err(SendError::NotOpen);
        };
        if parked.is_some() {
            self.parked_count -= 1;
        }
        let mut number = 0;
        let msg = match content {
            Some((action, payload)) => {
                let Some(offer) = s.offer.clone() else {
                    return Err(SendError::WrongPattern(s.pattern.as_str()));
                };
                number = s.next_reply;
                s.next_reply += 1;
                let mut r =
                    Message::new(s.version, Action::Other(action), Body::Application(payload));
                r.sequence = Some(SequenceHeader {
                    identifier: offer,
                    number,
                    last_message: false,
                });
                r.relates_to = message_id;
                let r = s.stamp(r);
                s.unacked_replies.insert(number, token.request);
                s.requests.insert(
                    token.request,
                    ReqState::Replied {
                        reply: Box::new(r.clone()),
                    },
                );
                r
            }
            None => standalone_ack(s.version, s.ack()),
        };
        if let Some((ex, _)) = parked {
            let mut msg = msg;
            msg.ack = Some(s.ack());
            self.out.push_back(ServerTransmit {
                exchange: Some(ex),
                session: Some(s.id),
                message: Some(msg),
            });
        }
        self.try_finish_last(s);
        Ok(number)
    }

    /// Duplex: queues a message on the session's outbound sequence; returns its number.
    pub fn send(
        &mut self,
        _now: Instant,
        session: SessionId,
        action: Arc<str>,
        payload: Bytes,
    ) -> Result<u64, SendError> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(SendError::UnknownSession)?;
        let o = s
            .outbound
            .as_mut()
            .ok_or(SendError::WrongPattern(s.pattern.as_str()))?;
        if !o.is_open() {
            return Err(SendError::NotOpen);
        }
        let n = o
            .src
            .enqueue(
                Action::Other(action),
                Body::Application(payload),
                None,
                None,
                false,
                false,
            )
            .ok_or(SendError::Rollover)?;
        self.mark_ready(session);
        Ok(n)
    }

    /// Duplex: closes the session's outbound sequence (1.0 LastMessage + TerminateSequence;
    /// 1.1 CloseSequence + TerminateSequence). `close_timeout` bounds it.
    pub fn close_session(
        &mut self,
        now: Instant,
        session: SessionId,
        close_timeout: Duration,
    ) -> Result<(), SendError> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(SendError::UnknownSession)?;
        let o = s
            .outbound
            .as_mut()
            .ok_or(SendError::WrongPattern(s.pattern.as_str()))?;
        o.close(now, close_timeout, None);
        self.mark_ready(session);
        self.rearm(session);
        Ok(())
    }

    /// Aborts a session: SequenceTerminated (Receiver) is sent when a path exists (duplex).
    pub fn abort_session(&mut self, _now: Instant, session: SessionId) -> bool {
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        if !s.http {
            let f = Fault::sequence_terminated(
                FaultCode::Receiver,
                &s.inbound.dest.id,
                "Due to a user abort the reliable session cannot continue.",
            );
            let m = s.stamp(fault_msg(s.version, f, None));
            self.out.push_back(ServerTransmit {
                exchange: None,
                session: Some(session),
                message: Some(m),
            });
        }
        self.finish(session, Some(SessionError::Aborted));
        true
    }

    fn remove_ended(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.remove(&id) {
            if s.ended {
                self.ended_count -= 1;
            }
            self.by_input.remove(&s.inbound.dest.id);
            if let Some(o) = &s.offer {
                self.by_output.remove(o);
            }
        }
    }

    /// Ends a session: a failed one is removed (later messages get UnknownSequence); a closed
    /// one is kept until its inactivity timeout so retransmissions still get their acks and
    /// responses. Parked exchanges are answered with 202.
    fn finish(&mut self, id: SessionId, error: Option<SessionError>) {
        match self.sessions.get_mut(&id) {
            None => return,
            Some(s) if s.ended => {
                if error.is_none() {
                    return;
                }
                s.ended = false;
                self.ended_count -= 1;
            }
            Some(s) => {
                if error.is_none() {
                    s.ended = true;
                    self.ended_count += 1;
                    if !s.accepted {
                        s.accepted = true;
                        self.pending_count = self.pending_count.saturating_sub(1);
                    }
                    self.events
                        .push_back(ServerEvent::SessionClosed { session: id });
                    self.mark_ready(id);
                    // Drop ids of tombstones that already expired (oldest first).
                    while let Some(front) = self.ended_order.front() {
                        if self.sessions.get(front).is_some_and(|s| s.ended) {
                            break;
                        }
                        self.ended_order.pop_front();
                    }
                    self.ended_order.push_back(id);
                    // Bound the tombstones: evict the oldest beyond `max_sessions`.
                    while self.ended_count > self.cfg.max_sessions.max(1) {
                        let Some(old) = self.ended_order.pop_front() else {
                            break;
                        };
                        if self.sessions.get(&old).is_some_and(|s| s.ended) {
                            self.remove_ended(old);
                        }
                    }
                    return;
                }
            }
        }
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        // Flush messages the session still had queued (faults, responses).
        while let Some(m) = s.tx.pop_front() {
            let m = s.stamp(m);
            self.out.push_back(ServerTransmit {
                exchange: None,
                session: Some(id),
                message: Some(m),
            });
        }
        let mut parked: Vec<ExchangeId> = s
            .requests
            .values()
            .filter_map(|r| match r {
                ReqState::Pending {
                    parked: Some((ex, _)),
                    ..
                } => Some(*ex),
                _ => None,
            })
            .collect();
        if let Some((_, Some((ex, _)))) = s.pending_last {
            parked.push(ex);
        }
        parked.extend(s.buffered_requests.drain().map(|(_, (ex, _))| ex));
        parked.sort();
        for ex in parked {
            self.release_parked(id, ex);
        }
        if !s.accepted {
            self.pending_count = self.pending_count.saturating_sub(1);
        }
        self.by_input.remove(&s.inbound.dest.id);
        if let Some(o) = &s.offer {
            self.by_output.remove(o);
        }
        let unacknowledged = s
            .outbound
            .as_ref()
            .map(|o| o.src.unacknowledged())
            .unwrap_or_default();
        if let Some(error) = error {
            self.events.push_back(ServerEvent::SessionFailed {
                session: id,
                error,
                unacknowledged,
            });
        }
    }

    fn after(&mut self, id: SessionId) {
        if let Some(s) = self.sessions.get(&id) {
            if !s.http || s.outbound.is_some() || !s.tx.is_empty() {
                self.mark_ready(id);
            }
        }
        self.rearm(id);
    }

    /// Drives every due timer (retransmissions, ack batching, inactivity, parked exchanges,
    /// close deadlines). Uses a timer heap: cost is proportional to due sessions.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(Reverse((t, id))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            if s.armed != Some(t) {
                continue;
            }
            s.armed = None;
            due.push(id);
        }
        for id in due {
            self.session_timeout(now, id);
            self.after(id);
        }
    }

    fn session_timeout(&mut self, now: Instant, id: SessionId) {
        let Some(mut s) = self.sessions.remove(&id) else {
            return;
        };
        let mut failure = None;
        if now >= s.inactivity_deadline && s.ended {
            self.sessions.insert(id, s);
            self.remove_ended(id);
            return;
        }
        if now >= s.inactivity_deadline {
            if !s.http {
                let f = Fault::sequence_terminated(
                    FaultCode::Receiver,
                    &s.inbound.dest.id,
                    format!(
                        "The inactivity timeout of ({:?}) has been exceeded.",
                        s.inactivity
                    ),
                );
                s.tx.push_back(fault_msg(s.version, f, None));
            }
            failure = Some(SessionError::InactivityTimeout);
        }
        if let Some(o) = s.outbound.as_mut() {
            o.src.handle_timeout(now);
            if !o.is_done() && o.close_deadline.is_some_and(|d| now >= d) && failure.is_none() {
                failure = Some(SessionError::CloseTimeout);
            }
        }
        // Parked exchanges past their limit get 202.
        let mut expired = Vec::new();
        for r in s.requests.values_mut() {
            if let ReqState::Pending { parked, .. } = r {
                if parked.is_some_and(|(_, d)| d <= now) {
                    if let Some((ex, _)) = parked.take() {
                        expired.push(ex);
                    }
                }
            }
        }
        if let Some((_, parked)) = s.pending_last.as_mut() {
            if parked.is_some_and(|(_, d)| d <= now) {
                if let Some((ex, _)) = parked.take() {
                    expired.push(ex);
                }
            }
        }
        s.buffered_requests.retain(|_, (ex, d)| {
            let keep = *d > now;
            if !keep {
                expired.push(*ex);
            }
            keep
        });
        expired.sort();
        for ex in expired {
            self.release_parked(id, ex);
        }
        self.sessions.insert(id, s);
        if let Some(e) = failure {
            self.finish(id, Some(e));
        }
    }

    /// The earliest deadline across all sessions (may be early after state changes; calling
    /// `handle_timeout` then is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Next thing to send: answers to exchanges and one-way messages to peers.
    ///
    /// Called until `None` after every input, mostly with an answer queued or nothing to do:
    /// those two checks are inline, the sessions are polled out of line.
    #[inline]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<ServerTransmit> {
        if let Some(t) = self.out.pop_front() {
            return Some(t);
        }
        if self.ready.is_empty() {
            return None;
        }
        self.poll_sessions(now)
    }

    /// [`Endpoint::poll_transmit`] when no answer is queued and sessions are ready.
    #[inline(never)]
    fn poll_sessions(&mut self, now: Instant) -> Option<ServerTransmit> {
        loop {
            if let Some(t) = self.out.pop_front() {
                return Some(t);
            }
            let id = self.ready.pop_front()?;
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            let r = Self::session_poll(s, now, &mut self.rng);
            let more = s.has_transmit(now);
            match r {
                Ok(Some(m)) => {
                    if more {
                        self.mark_ready(id);
                    }
                    self.rearm(id);
                    let closed = self.sessions.get(&id).is_some_and(|s| Self::complete(s));
                    let t = ServerTransmit {
                        exchange: None,
                        session: Some(id),
                        message: Some(m),
                    };
                    if closed {
                        self.out.push_back(t);
                        self.finish(id, None);
                        continue;
                    }
                    return Some(t);
                }
                Ok(None) => {
                    self.rearm(id);
                    if self.sessions.get(&id).is_some_and(|s| Self::complete(s)) {
                        self.finish(id, None);
                    }
                }
                Err(e) => {
                    self.finish(id, Some(e));
                }
            }
        }
    }

    fn session_poll(
        s: &mut Session,
        now: Instant,
        rng: &mut SmallRng,
    ) -> Result<Option<Message>, SessionError> {
        if let Some(mut m) = s.tx.pop_front() {
            if m.ack.is_none() && !matches!(m.body, Body::Fault(_)) {
                m.ack = s.inbound.take_piggyback();
            }
            return Ok(Some(s.stamp(m)));
        }
        if let Some(o) = s.outbound.as_mut() {
            if let Some(mut m) = o.poll_control(now, rng) {
                m.ack = s.inbound.take_piggyback();
                return Ok(Some(s.stamp(m)));
            }
            match o.src.poll_send(now) {
                Err(SourceFailure::RetryExhausted(number)) => {
                    let id = o.id().cloned().unwrap_or_default();
                    let f = Fault::sequence_terminated(
                        FaultCode::Receiver,
                        &id,
                        "The user specified maximum retry count for a particular message has been exceeded. Because of this the reliable session cannot continue.",
                    );
                    s.tx.push_back(fault_msg(s.version, f, None));
                    return Err(SessionError::RetryExhausted { number });
                }
                Ok(Some(mut m)) => {
                    m.ack = s.inbound.take_piggyback();
                    return Ok(Some(s.stamp(m)));
                }
                Ok(None) => {}
            }
        }
        if let Some(a) = s.inbound.take_due_ack(now) {
            return Ok(Some(s.stamp(standalone_ack(s.version, a))));
        }
        Ok(None)
    }

    /// Next event. Inline: polled until `None` after every input.
    #[inline]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }
}

// Durable sessions (issue 6): restoring stored inbound sequences after a restart.
impl Endpoint {
    /// Recreates a session from a stored [`crate::snapshot::DestSnapshot`] after a restart.
    ///
    /// The session acknowledges the stored ranges, treats stored numbers as duplicates, and
    /// delivers the stored undelivered messages again (`Delivery` events, in order when
    /// Ordered; two-way requests with a `reply` token). Request-reply sessions continue reply
    /// numbering at `next_reply_number` and replay the cached replies for retransmitted
    /// requests. A `SessionCreated` event is queued as for a new session; the session counts
    /// against MaxPendingChannels until [`Endpoint::accept`].
    pub fn restore_session(
        &mut self,
        now: Instant,
        snapshot: crate::snapshot::DestSnapshot,
    ) -> Result<SessionId, crate::snapshot::RestoreError> {
        use crate::snapshot::{check_ascending, RestoreError};
        let snap = snapshot;
        if self.by_input.contains_key(&snap.id) {
            return Err(RestoreError::Exists(snap.id));
        }
        if let Some(o) = &snap.reply_sequence {
            if self.by_output.contains_key(o) {
                return Err(RestoreError::Exists(o.clone()));
            }
        }
        check_ascending(&snap.undelivered, None)?;
        if snap.ranges.len() > crate::ranges::MAX_SEQUENCE_RANGES {
            return Err(RestoreError::Invalid(format!(
                "{} acknowledgement ranges (at most {})",
                snap.ranges.len(),
                crate::ranges::MAX_SEQUENCE_RANGES
            )));
        }
        for &(l, u) in &snap.ranges {
            if l == 0 || l > u || u > crate::msg::MAX_MESSAGE_NUMBER {
                return Err(RestoreError::Invalid(format!("range {l}-{u}")));
            }
        }
        let s = &self.cfg.settings;
        let version = snap.version;
        let http = snap.http;
        let pattern = match (&snap.reply_sequence, http) {
            (None, _) => Pattern::OneWay,
            (Some(_), true) => Pattern::RequestReply,
            (Some(_), false) => {
                return Err(RestoreError::Invalid(
                    "duplex sessions cannot be restored".into(),
                ))
            }
        };
        let rr = pattern == Pattern::RequestReply;
        let mut dest = Destination::new(
            snap.id.clone(),
            version,
            s.ordered,
            s.max_transfer_window_size,
            s.flow_control_enabled || rr,
            self.cfg.release_on_delivery,
        );
        dest.strict_in_order = rr && s.ordered && !snap.http;
        let undelivered: Vec<Delivered> = snap
            .undelivered
            .into_iter()
            .map(|m| Delivered {
                number: m.number,
                action: Action::Other(m.action),
                payload: m.payload,
                message_id: m.message_id,
            })
            .collect();
        let mut out = Vec::new();
        dest.restore(
            &snap.ranges,
            snap.last_number,
            snap.delivered_through,
            undelivered,
            &mut out,
        );
        let inbound = Inbound::new(
            dest,
            !http,
            s.acknowledgement_interval,
            s.max_transfer_window_size,
        );
        let mut csr = Message::new(
            version,
            Action::CreateSequenceResponse,
            Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
                identifier: snap.id.clone(),
                expires: None,
                incomplete_sequence_behavior: (version == RmVersion::Wsrm11)
                    .then(|| s.incomplete_sequence_behavior()),
                accept: None,
            })),
        );
        csr.to = snap.acks_to.clone();
        let id = SessionId(self.next_session);
        self.next_session += 1;
        let mut requests = HashMap::new();
        let mut unacked_replies = BTreeMap::new();
        for r in snap.cached_replies {
            unacked_replies.insert(r.reply_number, r.request_number);
            requests.insert(
                r.request_number,
                ReqState::Replied {
                    reply: Box::new(r.message),
                },
            );
        }
        let mut events = Vec::new();
        for d in out {
            let two_way = rr && d.message_id.is_some();
            if two_way {
                requests.insert(
                    d.number,
                    ReqState::Pending {
                        message_id: d.message_id.clone(),
                        parked: None,
                    },
                );
            }
            events.push(ServerEvent::Delivery {
                session: id,
                number: d.number,
                action: action_text(d.action),
                payload: d.payload,
                reply: two_way.then_some(ReplyToken {
                    session: id,
                    request: d.number,
                }),
            });
        }
        let session = Session {
            id,
            version,
            pattern,
            http,
            accepted: false,
            inbound,
            outbound: None,
            offer: snap.reply_sequence.clone(),
            peer: snap.acks_to.clone(),
            csr,
            inactivity: s.inactivity_timeout,
            inactivity_deadline: now + s.inactivity_timeout,
            requests,
            unacked_replies,
            next_reply: snap.next_reply_number.max(1),
            buffered_requests: HashMap::new(),
            pending_last: None,
            last_reply: None,
            max_window: s.max_transfer_window_size,
            armed: None,
            queued: false,
            tx: VecDeque::new(),
            ended: false,
        };
        self.sessions.insert(id, Box::new(session));
        self.by_input.insert(snap.id.clone(), id);
        if let Some(o) = &snap.reply_sequence {
            self.by_output.insert(o.clone(), id);
        }
        self.pending_count += 1;
        self.events.push_back(ServerEvent::SessionCreated {
            session: id,
            pattern,
            version,
            input: snap.id,
            output: snap.reply_sequence,
        });
        self.events.extend(events);
        self.rearm(id);
        Ok(id)
    }

    /// The reply cached for request `request` of `session` (request-reply), as it is replayed
    /// for a retransmitted request; `None` if there is none (not replied yet, or acknowledged).
    pub fn cached_reply(&self, session: SessionId, request: u64) -> Option<&Message> {
        match self.sessions.get(&session)?.requests.get(&request)? {
            ReqState::Replied { reply } => Some(reply),
            ReqState::Pending { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Everything observable after an input: transmits, events, the next deadline, counters.
    type Observed = (
        Vec<ServerTransmit>,
        Vec<ServerEvent>,
        Option<Instant>,
        Option<SessionStats>,
    );

    fn observe(e: &mut Endpoint, now: Instant, session: Option<SessionId>) -> Observed {
        let mut tx = Vec::new();
        let mut ev = Vec::new();
        loop {
            let mut progressed = false;
            while let Some(t) = e.poll_transmit(now) {
                progressed = true;
                tx.push(t);
            }
            while let Some(x) = e.poll_event() {
                progressed = true;
                ev.push(x);
            }
            if !progressed {
                break;
            }
        }
        (tx, ev, e.poll_timeout(), session.and_then(|s| e.stats(s)))
    }

    fn sequence_message(
        version: RmVersion,
        id: &SequenceId,
        n: u64,
        rng: &mut SmallRng,
    ) -> Message {
        let last = version == RmVersion::Wsrm10 && rng.random_bool(0.02);
        let (action, body) = if last && rng.random_bool(0.5) {
            (Action::LastMessage, Body::Empty)
        } else {
            (
                Action::Other(Arc::from("urn:test/op")),
                Body::Application(Bytes::from(format!("payload {n}"))),
            )
        };
        let mut m = Message::new(version, action, body);
        if rng.random_bool(0.5) {
            m.message_id = Some(Arc::from(format!("urn:uuid:m-{n}")));
        }
        m.sequence = Some(SequenceHeader {
            identifier: id.clone(),
            number: n,
            last_message: last,
        });
        if rng.random_bool(0.1) {
            m.ack_requested = Some(id.clone());
        }
        m
    }

    /// Drives an endpoint taking the one-way HTTP fast path and one taking only the general
    /// path with the same inputs (in order, duplicates, gaps, far ahead, invalid numbers,
    /// LastMessage, CloseSequence, TerminateSequence, releases, timeouts) and requires the
    /// same observable outcome after every input.
    fn fast_path_matches_general(version: RmVersion, ordered: bool, window: u32, seed: u64) {
        fast_path_matches_general_with(version, ordered, window, seed, false);
    }

    /// [`fast_path_matches_general`], choosing [`EndpointConfig::release_on_delivery`].
    fn fast_path_matches_general_with(
        version: RmVersion,
        ordered: bool,
        window: u32,
        seed: u64,
        release_on_delivery: bool,
    ) {
        let mut cfg = EndpointConfig::default();
        cfg.settings.max_transfer_window_size = window;
        cfg.settings.ordered = ordered;
        cfg.release_on_delivery = release_on_delivery;
        let mut fast = Endpoint::new(cfg.clone(), seed).expect("config");
        let mut general = Endpoint::new(cfg, seed).expect("config");
        general.general_only = true;
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut now = Instant::now();
        let mut ex = 0u64;
        let mut exchange = |e: &mut Endpoint, g: &mut Endpoint, now: Instant, m: Message| {
            ex += 1;
            e.handle_message(now, m.clone(), Some(ExchangeId(ex)));
            g.handle_message(now, m, Some(ExchangeId(ex)));
        };
        exchange(
            &mut fast,
            &mut general,
            now,
            one_way_create_sequence(version),
        );
        let a = observe(&mut fast, now, None);
        assert_eq!(a, observe(&mut general, now, None));
        let Some(ServerEvent::SessionCreated { session, input, .. }) = a.1.first().cloned() else {
            panic!("no session: {a:?}");
        };
        assert!(fast.accept(session) && general.accept(session));
        let mut next = 1u64;
        let mut undelivered: Vec<u64> = Vec::new();
        for step in 0..3000 {
            now += Duration::from_millis(rng.random_range(0..50));
            let r = rng.random_range(0..100);
            if r < 60 {
                let n = next;
                next += 1;
                let m = sequence_message(version, &input, n, &mut rng);
                exchange(&mut fast, &mut general, now, m);
            } else if r < 70 {
                let n = rng.random_range(1..next + 2);
                let m = sequence_message(version, &input, n, &mut rng);
                exchange(&mut fast, &mut general, now, m);
            } else if r < 78 {
                // Ahead of a gap, sometimes beyond the window.
                let n = next + rng.random_range(1..u64::from(window) * 3);
                let m = sequence_message(version, &input, n, &mut rng);
                exchange(&mut fast, &mut general, now, m);
            } else if r < 90 {
                if !undelivered.is_empty() {
                    let i = rng.random_range(0..undelivered.len());
                    let n = undelivered.swap_remove(i);
                    assert_eq!(fast.delivered(session, n), general.delivered(session, n));
                }
            } else if r < 93 {
                fast.handle_timeout(now);
                general.handle_timeout(now);
            } else if r < 94 && step > 2500 {
                // Invalid numbers fail the session (then: UnknownSequence for the rest).
                let n = if rng.random_bool(0.5) { 0 } else { u64::MAX };
                let m = sequence_message(version, &input, n, &mut rng);
                exchange(&mut fast, &mut general, now, m);
            } else if r < 95 && step > 2000 && version == RmVersion::Wsrm11 {
                let mut c = Message::new(
                    version,
                    Action::CloseSequence,
                    Body::CloseSequence {
                        identifier: input.clone(),
                        last_msg_number: None,
                    },
                );
                c.message_id = Some(Arc::from(format!("urn:uuid:close-{step}")));
                exchange(&mut fast, &mut general, now, c);
            } else if r < 96 && step > 2800 {
                let mut t = Message::new(
                    version,
                    Action::TerminateSequence,
                    Body::TerminateSequence {
                        identifier: input.clone(),
                        last_msg_number: None,
                    },
                );
                t.message_id = Some(Arc::from(format!("urn:uuid:ts-{step}")));
                exchange(&mut fast, &mut general, now, t);
            } else {
                // An acknowledgement-carrying or unrelated message (general path in both).
                let mut m = sequence_message(version, &input, next, &mut rng);
                next += 1;
                m.ack = Some(AckHeader {
                    identifier: SequenceId::from("urn:uuid:other"),
                    ..AckHeader::default()
                });
                exchange(&mut fast, &mut general, now, m);
            }
            let a = observe(&mut fast, now, Some(session));
            let b = observe(&mut general, now, Some(session));
            for e in &a.1 {
                if let ServerEvent::Delivery { number, .. } = e {
                    undelivered.push(*number);
                }
            }
            assert_eq!(a, b, "step {step}");
        }
    }

    #[test]
    fn fast_path_matches_general_path_10_ordered() {
        for seed in 0..4 {
            fast_path_matches_general(RmVersion::Wsrm10, true, 8, seed);
            fast_path_matches_general(RmVersion::Wsrm10, true, 64, seed);
        }
    }

    #[test]
    fn fast_path_matches_general_path_11_and_unordered() {
        for seed in 0..4 {
            fast_path_matches_general(RmVersion::Wsrm11, true, 8, seed);
            fast_path_matches_general(RmVersion::Wsrm11, false, 8, seed);
            fast_path_matches_general(RmVersion::Wsrm10, false, 16, seed);
        }
    }

    #[test]
    fn fast_path_matches_general_path_releasing_on_delivery() {
        for seed in 0..4 {
            fast_path_matches_general_with(RmVersion::Wsrm10, true, 1, seed, true);
            fast_path_matches_general_with(RmVersion::Wsrm11, true, 8, seed, true);
            fast_path_matches_general_with(RmVersion::Wsrm11, false, 8, seed, true);
        }
    }

    /// A CreateSequence without an Offer (a one-way session), anonymous AcksTo.
    fn one_way_create_sequence(version: RmVersion) -> Message {
        let mut cs = Message::new(
            version,
            Action::CreateSequence,
            Body::CreateSequence(Box::new(CreateSequence {
                acks_to: WSA10_ANONYMOUS.to_string(),
                expires: None,
                offer: None,
            })),
        );
        cs.message_id = Some(Arc::from("urn:uuid:cs"));
        cs
    }

    /// Opens a one-way HTTP session (accepted) on `e`; returns it and its sequence.
    fn open_one_way(e: &mut Endpoint, version: RmVersion, now: Instant) -> (SessionId, SequenceId) {
        e.handle_message(now, one_way_create_sequence(version), Some(ExchangeId(1)));
        let (_, ev, _, _) = observe(e, now, None);
        let Some(ServerEvent::SessionCreated { session, input, .. }) = ev.first().cloned() else {
            panic!("no session: {ev:?}");
        };
        assert!(e.accept(session));
        (session, input)
    }

    /// The BufferRemaining of the acknowledgement answering sequence message `n`, and the
    /// numbers delivered by it.
    fn answer_buffer_remaining(
        e: &mut Endpoint,
        input: &SequenceId,
        n: u64,
        ex: u64,
        now: Instant,
    ) -> (Option<u32>, Vec<u64>) {
        let mut m = Message::new(
            RmVersion::Wsrm10,
            Action::Other(Arc::from("urn:test/op")),
            Body::Application(Bytes::from_static(b"<p/>")),
        );
        m.sequence = Some(SequenceHeader {
            identifier: input.clone(),
            number: n,
            last_message: false,
        });
        e.handle_message(now, m, Some(ExchangeId(ex)));
        let (tx, ev, _, _) = observe(e, now, None);
        let answer = tx
            .iter()
            .find(|t| t.exchange == Some(ExchangeId(ex)))
            .and_then(|t| t.message.as_ref())
            .and_then(|m| m.ack.as_ref())
            .and_then(|a| a.buffer_remaining);
        let delivered = ev
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Delivery { number, .. } => Some(*number),
                _ => None,
            })
            .collect();
        (answer, delivered)
    }

    #[test]
    fn buffer_remaining_counts_a_delivery_until_released_unless_release_on_delivery() {
        let now = Instant::now();
        for general_only in [false, true] {
            // Window 1: the ack answering message 1 says the buffer is full until the
            // application releases it, so the client must poll before sending message 2.
            let mut cfg = EndpointConfig::default();
            cfg.settings.max_transfer_window_size = 1;
            let mut e = Endpoint::new(cfg.clone(), 7).expect("config");
            e.general_only = general_only;
            let (session, input) = open_one_way(&mut e, RmVersion::Wsrm10, now);
            assert_eq!(
                answer_buffer_remaining(&mut e, &input, 1, 2, now),
                (Some(0), vec![1])
            );
            assert!(e.delivered(session, 1));
            assert_eq!(
                answer_buffer_remaining(&mut e, &input, 2, 3, now),
                (Some(0), vec![2])
            );

            // Released when delivered: the same ack already has the slot free again.
            cfg.release_on_delivery = true;
            let mut e = Endpoint::new(cfg.clone(), 7).expect("config");
            e.general_only = general_only;
            let (session, input) = open_one_way(&mut e, RmVersion::Wsrm10, now);
            assert_eq!(
                answer_buffer_remaining(&mut e, &input, 1, 2, now),
                (Some(1), vec![1])
            );
            assert!(!e.delivered(session, 1), "nothing left to release");
            assert_eq!(
                answer_buffer_remaining(&mut e, &input, 2, 3, now),
                (Some(1), vec![2])
            );

            // A message held ahead of a gap still counts until it is delivered.
            cfg.settings.max_transfer_window_size = 4;
            let mut e = Endpoint::new(cfg, 7).expect("config");
            e.general_only = general_only;
            let (_, input) = open_one_way(&mut e, RmVersion::Wsrm10, now);
            assert_eq!(
                answer_buffer_remaining(&mut e, &input, 2, 2, now),
                (Some(3), vec![])
            );
            assert_eq!(
                answer_buffer_remaining(&mut e, &input, 3, 3, now),
                (Some(2), vec![])
            );
            assert_eq!(
                answer_buffer_remaining(&mut e, &input, 1, 4, now),
                (Some(4), vec![1, 2, 3])
            );
        }
    }
}
