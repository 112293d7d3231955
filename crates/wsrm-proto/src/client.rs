//! The initiator side of a reliable session ([`ClientSession`]): CreateSequence handshake with
//! WCF's retry schedule, the outbound sequence (RM Source), the offered inbound sequence (RM
//! Destination) for request-reply and duplex, keep-alive polling, inactivity timeout and close.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::dest::{Delivered, Destination, Incoming};
use crate::inbound::Inbound;
use crate::msg::{
    AckHeader, Action, Body, CreateSequence, Fault, FaultCode, FaultKind, Message, Offer,
    RmVersion, SequenceId,
};
use crate::outbound::{new_urn, Outbound, Stage};
use crate::settings::{Settings, SettingsError};
use crate::source::{Source, SourceFailure};
use crate::types::{
    earliest, ClientEvent, ClientState, Pattern, SendError, SessionError, SessionStats, Shape,
    REQUESTOR_RETRY_INTERVAL, WSA10_ANONYMOUS,
};

/// Configuration of a [`ClientSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The eight reliable-session settings.
    pub settings: Settings,
    /// Exchange pattern (decides whether the CreateSequence carries an Offer).
    pub pattern: Pattern,
    /// Transport shape.
    pub shape: Shape,
    /// The URI the CreateSequence is sent to; when set, the CSR's `Accept/AcksTo` must equal it
    /// byte for byte, and every outgoing message gets it as `to`.
    pub remote_address: Option<Arc<str>>,
    /// The local EPR address: AcksTo, ReplyTo and (1.1) Offer/Endpoint. Default: the WSA 1.0
    /// anonymous URI (HTTP request/reply).
    pub local_address: Arc<str>,
    /// Bounds the CreateSequence handshake (binding OpenTimeout, default 1 min).
    pub open_timeout: Duration,
    /// Bounds the 1.1 CloseSequence/TerminateSequence handshake (binding CloseTimeout, default
    /// 1 min); waiting for the last acknowledgements is bounded by MaxRetryCount.
    pub close_timeout: Duration,
    /// Binding SendTimeout (default 1 min); fast polling uses SendTimeout/2.
    pub send_timeout: Duration,
    /// When a message exhausts MaxRetryCount, tell the destination with a SequenceTerminated
    /// fault (WCF; default `true`). A durable client sets `false`: its stored sequence stays
    /// resumable, which the fault would end at the destination (whose InactivityTimeout still
    /// ends the sequence if the client never comes back). docs/engine.md, deviation 11.
    pub terminate_on_retry_exhausted: bool,
}

impl ClientConfig {
    /// WCF defaults for the given pattern and shape.
    pub fn new(pattern: Pattern, shape: Shape) -> Self {
        ClientConfig {
            settings: Settings::default(),
            pattern,
            shape,
            remote_address: None,
            local_address: Arc::from(WSA10_ANONYMOUS),
            open_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            terminate_on_retry_exhausted: true,
        }
    }
}

/// The SequenceTerminated reason when a message exceeds a size quota
/// ([`ClientSession::handle_too_large`]).
const QUOTA_EXCEEDED_REASON: &str = "A message of the sequence exceeds the maximum message size the reliable session can transfer. Because of this the reliable session cannot continue.";

/// The earlier of two deadlines (`None`: no deadline). [`earliest`], inline (the public
/// `poll_timeout` fast path is inlined into callers in other crates).
#[inline]
fn min_deadline(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The fast-polling interval: 2·RTT (at least 20 ms), doubled per unanswered poll (up to
/// 2^16), capped at `cap`.
#[inline]
fn fast_poll_interval(rtt_us: u64, fast_polls: u32, cap: Duration) -> Duration {
    let base_us = rtt_us.saturating_mul(2).max(20_000);
    let factor = 1u64 << fast_polls.min(16);
    Duration::from_micros(base_us.saturating_mul(factor)).min(cap)
}

/// The session's event queue. `Acknowledged` events (one per message) are kept as bare
/// numbers, the others whole, each with its position in the queue: a `ClientEvent` is 168
/// bytes, so queueing and taking every acknowledgement as one cost two `memcpy` calls per
/// message; an acknowledgement is now 16 bytes in and a number written out.
#[derive(Debug)]
struct Events {
    /// `(position, number)` of the queued `Acknowledged` events, in order.
    acks: VecDeque<(u64, u64)>,
    /// `(position, event)` of the other queued events, in order.
    others: VecDeque<(u64, ClientEvent)>,
    /// Position of the next event queued at the back.
    back: u64,
    /// Position of the next event queued at the front (below every position given out).
    front: u64,
}

impl Events {
    fn new() -> Self {
        // Positions grow from the middle of the range both ways: neither end is reachable.
        Events {
            acks: VecDeque::new(),
            others: VecDeque::new(),
            back: 1 << 62,
            front: (1 << 62) - 1,
        }
    }

    fn push_ack(&mut self, number: u64) {
        self.acks.push_back((self.back, number));
        self.back += 1;
    }

    fn push_back(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Acknowledged { number } => self.push_ack(number),
            e => {
                self.others.push_back((self.back, e));
                self.back += 1;
            }
        }
    }

    fn push_front(&mut self, e: ClientEvent) {
        match e {
            ClientEvent::Acknowledged { number } => self.acks.push_front((self.front, number)),
            e => self.others.push_front((self.front, e)),
        }
        self.front -= 1;
    }

    #[inline]
    fn pop_front(&mut self) -> Option<ClientEvent> {
        match (self.acks.front(), self.others.front()) {
            (Some(&(pa, number)), o) if o.is_none_or(|&(po, _)| pa < po) => {
                self.acks.pop_front();
                Some(ClientEvent::Acknowledged { number })
            }
            (_, Some(_)) => self.others.pop_front().map(|(_, e)| e),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeepAlive {
    Idle,
    Polling,
    Fast,
}

/// The initiator of a reliable session (RM Source of the outbound sequence and, with Offer, RM
/// Destination of the inbound one). Sans-IO: feed it messages and time, poll it for messages,
/// deadlines and events.
#[derive(Debug)]
pub struct ClientSession {
    cfg: ClientConfig,
    version: RmVersion,
    rng: SmallRng,
    state: ClientState,
    out: Outbound,
    inbound: Option<Inbound>,
    offered: Option<SequenceId>,
    cs: Message,
    cs_mid: Arc<str>,
    cs_sent_at: Instant,
    cs_last_sent: Instant,
    cs_next: Instant,
    /// Failed CreateSequence exchanges so far (the first few are retried at once).
    cs_failures: u32,
    open_deadline: Instant,
    tx: VecDeque<Message>,
    events: Events,
    /// The last remote activity: the inactivity deadline is InactivityTimeout after it
    /// ([`ClientSession::inactivity_deadline`], computed where a timer is handled rather than
    /// on every inbound message).
    last_activity: Option<Instant>,
    keepalive_deadline: Option<Instant>,
    /// The earlier of `inactivity_deadline` and `keepalive_deadline` (set with them): one
    /// comparison tells `handle_timeout` neither is due, and gives `poll_timeout` both.
    idle_deadline: Option<Instant>,
    keepalive_mode: KeepAlive,
    /// Fast polls sent since the quota last reopened (backoff of the fast-polling interval).
    fast_polls: u32,
    /// InactivityTimeout/2: keep-alive after remote silence (computed once: `Duration`
    /// division is not cheap and the intervals are needed per inbound message).
    idle_interval: Duration,
    /// InactivityTimeout/(2·MaxRetryCount): keep-alive polling interval.
    poll_interval: Duration,
    /// min(SendTimeout/2, `poll_interval`): the cap of the fast-polling interval.
    fast_poll_cap: Duration,
    requests: HashMap<Arc<str>, u64>,
    inbound_seen: bool,
    undelivered_replies: std::collections::BTreeSet<u64>,
    scratch: Vec<Delivered>,
    /// The RM 1.0 TerminateSequence as sent, and how many more times it may be sent again
    /// after its exchange failed (see [`ClientSession::handle_transport_failure`]).
    terminate_copy: Option<(Message, u32)>,
    /// Tests only: every call takes the general path (to compare the fast paths with it).
    #[cfg(test)]
    general_only: bool,
}

impl ClientSession {
    /// Creates the session and queues the CreateSequence (poll it with `poll_transmit`).
    /// `seed` seeds the RNG that mints identifiers, so runs are reproducible.
    pub fn new(now: Instant, cfg: ClientConfig, seed: u64) -> Result<Self, SettingsError> {
        cfg.settings.validate()?;
        let bad_combo = matches!(
            (cfg.pattern, cfg.shape),
            (Pattern::RequestReply, Shape::Duplex) | (Pattern::Duplex, Shape::RequestReply)
        );
        if bad_combo {
            return Err(SettingsError {
                setting: "Pattern",
                value: format!("{:?} over {:?}", cfg.pattern, cfg.shape),
                allowed:
                    "one-way over either shape, request-reply over RequestReply, duplex over Duplex",
            });
        }
        let s = &cfg.settings;
        let version = s.reliable_messaging_version;
        let mut rng = SmallRng::seed_from_u64(seed);
        let cs_mid = new_urn(&mut rng);
        let offered = (cfg.pattern != Pattern::OneWay).then(|| SequenceId::new(new_urn(&mut rng)));
        let anonymous = &*cfg.local_address == WSA10_ANONYMOUS;
        let reply_to = (!anonymous).then(|| cfg.local_address.clone());
        let offer = offered.as_ref().map(|id| Offer {
            identifier: id.clone(),
            endpoint: (version == RmVersion::Wsrm11).then(|| cfg.local_address.to_string()),
            expires: None,
            incomplete_sequence_behavior: (version == RmVersion::Wsrm11)
                .then(|| s.incomplete_sequence_behavior()),
        });
        let mut cs = Message::new(
            version,
            Action::CreateSequence,
            Body::CreateSequence(Box::new(CreateSequence {
                acks_to: cfg.local_address.to_string(),
                expires: None,
                offer,
            })),
        );
        cs.message_id = Some(cs_mid.clone());
        cs.reply_to = reply_to.clone();
        cs.to = cfg.remote_address.clone();
        let request_acks = cfg.shape == Shape::Duplex;
        let src = Source::new(
            version,
            s.max_transfer_window_size,
            s.max_retry_count,
            s.flow_control_enabled,
            request_acks,
            cfg.shape == Shape::Duplex,
        );
        let mut src = src;
        src.set_max_rto(s.inactivity_timeout / 2 / s.max_retry_count.max(1));
        let out = Outbound::new(src, reply_to, cfg.pattern == Pattern::RequestReply);
        let mut tx = VecDeque::new();
        tx.push_back(cs.clone());
        Ok(ClientSession {
            version,
            rng,
            state: ClientState::Connecting,
            out,
            inbound: None,
            offered,
            cs,
            cs_mid,
            cs_sent_at: now,
            cs_last_sent: now,
            cs_next: now + REQUESTOR_RETRY_INTERVAL,
            terminate_copy: None,
            cs_failures: 0,
            open_deadline: now + cfg.open_timeout,
            tx,
            events: Events::new(),
            last_activity: None,
            keepalive_deadline: None,
            idle_deadline: None,
            keepalive_mode: KeepAlive::Idle,
            fast_polls: 0,
            idle_interval: s.inactivity_timeout / 2,
            poll_interval: s.inactivity_timeout / 2 / s.max_retry_count.max(1),
            fast_poll_cap: (cfg.send_timeout / 2)
                .min(s.inactivity_timeout / 2 / s.max_retry_count.max(1)),
            requests: HashMap::new(),
            inbound_seen: false,
            undelivered_replies: std::collections::BTreeSet::new(),
            scratch: Vec::new(),
            #[cfg(test)]
            general_only: false,
            cfg,
        })
    }

    /// Whether the fast paths may be taken (tests compare them with the general paths).
    #[inline]
    fn fast(&self) -> bool {
        #[cfg(test)]
        return !self.general_only;
        #[cfg(not(test))]
        true
    }

    /// Tests only: makes every call take the general path.
    #[cfg(test)]
    fn set_general_only(&mut self) {
        self.general_only = true;
        self.out.src.general_only = true;
    }

    /// Current state.
    #[inline]
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The outbound sequence id (known once open).
    pub fn output_id(&self) -> Option<&SequenceId> {
        self.out.id()
    }

    /// The inbound (offered) sequence id, if any.
    pub fn input_id(&self) -> Option<&SequenceId> {
        self.offered.as_ref()
    }

    /// The RM version in use.
    pub fn version(&self) -> RmVersion {
        self.version
    }

    /// Counters. Inline: runtimes copy them out every turn.
    #[inline]
    pub fn stats(&self) -> SessionStats {
        let c = self.out.src.counters;
        let (dups, delivered, dropped) = self
            .inbound
            .as_ref()
            .map(|i| (i.dest.duplicates, i.dest.delivered, i.dest.dropped))
            .unwrap_or((0, 0, 0));
        SessionStats {
            sent: c.sent,
            retransmitted: c.retransmitted,
            acknowledged: c.acknowledged,
            duplicates_dropped: dups,
            delivered,
            dropped,
            window_size: self.out.src.window_size,
            rtt: self.out.src.rtt(),
        }
    }

    fn accepting(&self) -> Result<(), SendError> {
        match self.state {
            ClientState::Connecting | ClientState::Open if self.out.is_open() => Ok(()),
            _ => Err(SendError::NotOpen),
        }
    }

    /// Queues a one-way application message; returns its message number. Messages enter the
    /// transmission window in FIFO order (numbers are assigned consecutively from 1).
    pub fn send(
        &mut self,
        _now: Instant,
        action: Arc<str>,
        payload: Bytes,
    ) -> Result<u64, SendError> {
        self.accepting()?;
        if self.cfg.pattern == Pattern::RequestReply {
            // A one-way operation in a request-reply session: acknowledged by a standalone ack.
        }
        self.out
            .src
            .enqueue(
                Action::Other(action),
                Body::Application(payload),
                None,
                None,
                false,
                false,
            )
            .ok_or(SendError::Rollover)
    }

    /// Queues a two-way request (request-reply pattern); returns its number, which the
    /// `Reply` event names. The request is retransmitted until its reply arrives.
    pub fn request(
        &mut self,
        _now: Instant,
        action: Arc<str>,
        payload: Bytes,
    ) -> Result<u64, SendError> {
        if self.cfg.pattern != Pattern::RequestReply {
            return Err(SendError::WrongPattern(self.cfg.pattern.as_str()));
        }
        self.accepting()?;
        let mid = new_urn(&mut self.rng);
        let n = self
            .out
            .src
            .enqueue(
                Action::Other(action),
                Body::Application(payload),
                Some(mid.clone()),
                None,
                false,
                true,
            )
            .ok_or(SendError::Rollover)?;
        self.requests.insert(mid, n);
        Ok(n)
    }

    /// Starts a graceful close: 1.0 LastMessage then TerminateSequence; 1.1 CloseSequence,
    /// final ack, TerminateSequence. Duplex also waits for the peer to finish its sequence.
    pub fn close(&mut self, now: Instant) -> Result<(), SendError> {
        match self.state {
            ClientState::Open => {}
            ClientState::Closing => return Ok(()),
            _ => return Err(SendError::NotOpen),
        }
        self.state = ClientState::Closing;
        let mid = (self.cfg.pattern == Pattern::RequestReply).then(|| new_urn(&mut self.rng));
        if let Some(mid) = &mid {
            // The 1.0 LastMessage request is answered with the reply sequence's LastMessage.
            self.requests.insert(mid.clone(), 0);
        }
        self.out.close(now, self.cfg.close_timeout, mid);
        self.check_closed();
        Ok(())
    }

    /// Aborts: sends SequenceTerminated (Receiver, user abort) and fails the session.
    pub fn abort(&mut self, _now: Instant) {
        if matches!(self.state, ClientState::Closed | ClientState::Failed) {
            return;
        }
        if let Some(id) = self.offered.clone().or_else(|| self.out.id().cloned()) {
            if self.state != ClientState::Connecting {
                let f = Fault::sequence_terminated(
                    FaultCode::Receiver,
                    &id,
                    "Due to a user abort the reliable session cannot continue.",
                );
                self.queue_fault(f);
            }
        }
        self.fail(SessionError::Aborted);
    }

    fn queue_fault(&mut self, f: Fault) {
        let action = Action::Fault;
        self.tx
            .push_back(Message::new(self.version, action, Body::Fault(Box::new(f))));
    }

    fn fail(&mut self, error: SessionError) {
        if matches!(self.state, ClientState::Closed | ClientState::Failed) {
            return;
        }
        self.state = ClientState::Failed;
        let mut unacknowledged = self.out.src.unacknowledged();
        if !self.undelivered_replies.is_empty() {
            unacknowledged.extend(self.undelivered_replies.iter().copied());
            unacknowledged.sort_unstable();
            unacknowledged.dedup();
        }
        self.events.push_back(ClientEvent::Failed {
            error,
            unacknowledged,
        });
    }

    fn violation(&mut self, f: Fault) {
        self.queue_fault(f.clone());
        self.fail(SessionError::ProtocolViolation(f));
    }

    fn interval(&self, mode: KeepAlive) -> Duration {
        let ka = self.poll_interval;
        match mode {
            KeepAlive::Idle => self.idle_interval,
            KeepAlive::Polling => ka,
            // WCF polls a destination that advertised BufferRemaining 0 every
            // min(SendTimeout/2, InactivityTimeout/(2·MaxRetryCount)) = 30 s. An HTTP
            // destination cannot announce that its buffer reopened, and a busy application
            // empties it within milliseconds, so a 30 s poll stalls the session for nothing.
            // We poll after 2·RTT (at least 20 ms), doubling per unanswered poll, capped at
            // WCF's interval (docs/engine.md, deviations).
            //
            // In whole microseconds (the RTT is kept in them; computed on every inbound
            // message while the quota is exhausted): the same value as
            // `(rtt·2).max(20 ms).saturating_mul(factor).min(cap)` with `Duration`s, the
            // microsecond product saturating far above the cap.
            KeepAlive::Fast => {
                fast_poll_interval(self.out.src.rtt_us(), self.fast_polls, self.fast_poll_cap)
            }
        }
    }

    fn on_remote_activity(&mut self, now: Instant) {
        self.last_activity = Some(now);
        self.keepalive_mode = if self.out.src.quota_exhausted() {
            KeepAlive::Fast
        } else {
            self.fast_polls = 0;
            KeepAlive::Idle
        };
        let interval = self.interval(self.keepalive_mode);
        let keepalive = now + interval;
        self.keepalive_deadline = Some(keepalive);
        // The earlier of the two deadlines, with one `Instant` addition (the keep-alive
        // interval is the shorter in every mode).
        let inactivity = self.cfg.settings.inactivity_timeout;
        self.idle_deadline = Some(if interval <= inactivity {
            keepalive
        } else {
            now + inactivity
        });
    }

    /// InactivityTimeout after the last remote activity (none before any).
    fn inactivity_deadline(&self) -> Option<Instant> {
        self.last_activity
            .map(|t| t + self.cfg.settings.inactivity_timeout)
    }

    /// The HTTP exchange that carried the RM 1.0 LastMessage was answered with an empty
    /// success status (HTTP 200/202, no envelope): the destination took the LastMessage but
    /// sent no acknowledgement on the only channel an anonymous AcksTo has, so none will
    /// come. gSOAP 2.8 does this every time (docs/interop.md, gSOAP quirk 15); WCF always
    /// answers with an acknowledgement. If every application message is acknowledged, the
    /// close proceeds to TerminateSequence instead of retransmitting the LastMessage until
    /// CloseTimeout. Otherwise (or in any other state) nothing happens. A failed exchange
    /// (connection error, an intermediary's 502) is not such an answer and must not be
    /// reported.
    pub fn handle_empty_answer_to_last_message(&mut self, now: Instant) {
        if self.state != ClientState::Closing
            || self.version != RmVersion::Wsrm10
            || self.cfg.shape != Shape::RequestReply
        {
            return;
        }
        if self.out.src.give_up_last_message() {
            tracing::debug!("LastMessage accepted without an acknowledgement: terminating");
            self.on_remote_activity(now);
        }
    }

    /// The transport lost the last transmission of sequence message `number` for certain (the
    /// HTTP exchange carrying it failed without a SOAP answer: connection error, timeout, an
    /// intermediary's 502). The message is retransmitted at once for its first few attempts
    /// instead of waiting for the retransmission timer (a deviation from WCF that only makes
    /// recovery faster; see docs/engine.md). Other messages and states are unaffected.
    ///
    /// `number: None` is a failed exchange that carried no sequence message; while connecting
    /// it is the CreateSequence, while closing the 1.1 CloseSequence or TerminateSequence:
    /// each is then retried at once for its first [`FAST_RETRIES`](crate::FAST_RETRIES)
    /// failures, then after 50 ms, doubling per failure up to WCF's 10 s requestor retry
    /// interval (instead of always waiting 10 s).
    pub fn handle_transport_failure(&mut self, now: Instant, number: Option<u64>) {
        match (self.state, number) {
            (ClientState::Connecting, None) => {
                self.cs_failures = self.cs_failures.saturating_add(1);
                let at = if self.cs_failures <= crate::source::FAST_RETRIES {
                    now
                } else {
                    let since_first = self.cs_last_sent.saturating_duration_since(self.cs_sent_at);
                    let delay = (since_first * 2)
                        .max(Duration::from_millis(50))
                        .min(REQUESTOR_RETRY_INTERVAL);
                    (self.cs_last_sent + delay).max(now)
                };
                if at < self.cs_next {
                    tracing::debug!(
                        failures = self.cs_failures,
                        "CreateSequence exchange failed: retrying early"
                    );
                    self.cs_next = at;
                }
            }
            (ClientState::Open | ClientState::Closing, Some(n))
                if self.out.src.transport_failed(n) =>
            {
                tracing::debug!(number = n, "transport failure: retransmitting at once");
            }
            (ClientState::Closing, None) if self.out.control_failed(now) => {
                tracing::debug!("Close/Terminate exchange failed: retrying early");
            }
            // RM 1.0 TerminateSequence is one-way: the session closed when it was sent, and
            // WCF sends it once. An un-numbered exchange that failed outright (no HTTP answer,
            // or an intermediary's 502: the destination did not get it) is that terminate, or
            // at most a last acknowledgement of the inbound sequence; either way the terminate
            // is sent again, at most FAST_RETRIES times: a destination that missed it keeps
            // the sequence until its inactivity timeout, and one that got it answers the copy
            // with an UnknownSequence fault at most, which the closed session ignores (as WCF
            // does after its own TerminateSequence).
            (ClientState::Closed, None) => {
                if let Some((m, left)) = self.terminate_copy.as_mut().filter(|(_, l)| *l > 0) {
                    *left -= 1;
                    tracing::debug!("TerminateSequence exchange failed: sending it again");
                    let m = m.clone();
                    self.tx.push_back(m);
                }
            }
            _ => {}
        }
    }

    /// The HTTP exchange that carried sequence message `number` was answered with an empty
    /// success status (HTTP 200/202, no envelope). WCF always answers a sequence message with an
    /// acknowledgement, so this changes nothing against WCF. gSOAP 2.8 answers a duplicate this
    /// way and never acknowledges it again (docs/interop.md, gSOAP quirk 19): when that answer
    /// is to a retransmission of the window head, the next message is sent as well, so its
    /// cumulative acknowledgement covers the head. When there is no next message (closing, the
    /// last message is the only one unacknowledged), RM 1.1 sends CloseSequence at once, whose
    /// response carries the acknowledgement (docs/engine.md, deviation 12). `sent` is when the
    /// copy this answers was transmitted (the exchange's start): an answer to a copy sent before
    /// its predecessors were acknowledged may be an out-of-order discard and counts for
    /// nothing. Do not report failed exchanges here.
    pub fn handle_empty_answer(&mut self, now: Instant, number: u64, sent: Instant) {
        if !matches!(self.state, ClientState::Open | ClientState::Closing)
            || self.cfg.shape != Shape::RequestReply
        {
            return;
        }
        if self.out.src.probe_past_head(now, number, sent) {
            tracing::debug!(
                number,
                "retransmission accepted without an ack: probing with the next message"
            );
        } else if self.state == ClientState::Closing
            && self.out.src.unprobeable_last(number, sent)
            && self.out.close_early()
        {
            // The last message has no next one to probe with, and such a destination answers
            // AckRequested without an ack too (gSOAP quirk 3): 1.1 asks with CloseSequence.
            tracing::debug!(
                number,
                "last message accepted without an ack while closing: CloseSequence now"
            );
        }
    }

    /// Message `number` can never be transferred because of its size: the destination's
    /// transport refused it (HTTP 413), or, with `reply`, the reply to it exceeded this
    /// endpoint's maximum message size. No later message can take its place (the sequence
    /// cannot complete without it), so the session fails at once with
    /// [`SessionError::MessageTooLarge`] or [`SessionError::ReplyTooLarge`], telling the peer
    /// with a SequenceTerminated fault as WCF does on a QuotaExceededException, instead of
    /// retransmitting it to MaxRetryCount. Ignored unless the message is outstanding (sent and
    /// not done) in an open or closing session.
    pub fn handle_too_large(&mut self, now: Instant, number: u64, reply: bool) {
        if reply && self.cfg.pattern != Pattern::RequestReply {
            // An answer too large to a one-way message is an acknowledgement that did not get
            // through; a later one covers the message.
            self.handle_transport_failure(now, Some(number));
            return;
        }
        if !matches!(self.state, ClientState::Open | ClientState::Closing)
            || !self.out.src.is_outstanding(number)
        {
            return;
        }
        if let Some(id) = self.out.id().cloned() {
            self.queue_fault(Fault::sequence_terminated(
                FaultCode::Sender,
                &id,
                QUOTA_EXCEEDED_REASON,
            ));
        }
        self.fail(if reply {
            SessionError::ReplyTooLarge { number }
        } else {
            SessionError::MessageTooLarge { number }
        });
    }

    /// Processes one inbound message (including HTTP responses). Never panics on peer input;
    /// violations become faults and `Failed` events.
    pub fn handle_message(&mut self, now: Instant, m: Message) {
        match self.state {
            ClientState::Closed | ClientState::Failed => return,
            ClientState::Connecting => {
                self.handle_handshake(now, m);
                return;
            }
            _ => {}
        }
        // Remote activity sets the inactivity deadline and the polling mode. When the message
        // carries an ack for our sequence, that is done once, after the ack (the mode follows
        // the quota the ack leaves): doing it before as well changed nothing (a mode chosen
        // before the ack is always chosen again after it, and the fast-poll count can only
        // have been reset already when the quota was open).
        let own_ack = !matches!(m.body, Body::Fault(_))
            && m.ack
                .as_ref()
                .is_some_and(|a| Some(&a.identifier) == self.out.id());
        if !own_ack {
            self.on_remote_activity(now);
        }
        if let Body::Fault(f) = &m.body {
            self.handle_fault(Fault::clone(f));
            return;
        }
        if let Some(ack) = &m.ack {
            // `own_ack` is this comparison (a fault body returned above): the identifier is not
            // compared twice.
            if !self.on_ack(now, ack, own_ack) {
                return;
            }
        }
        if let Some(seq) = &m.sequence {
            if Some(&seq.identifier) == self.offered.as_ref() {
                if !self.on_inbound(now, &m) {
                    return;
                }
            } else if self.cfg.shape == Shape::Duplex {
                self.queue_fault(Fault::unknown_sequence(&seq.identifier));
            }
        }
        if let Some(id) = &m.ack_requested {
            if Some(id) == self.offered.as_ref() {
                if let Some(i) = self.inbound.as_mut() {
                    i.ack_immediately();
                }
            }
        }
        self.handle_body(now, &m);
        self.check_closed();
    }

    /// Processes a standalone acknowledgement: exactly what [`ClientSession::handle_message`]
    /// does with a `SequenceAcknowledgement` message carrying `ack` and nothing else (no
    /// other header, an empty body), without the message around it — the answer to every
    /// one-way message over HTTP, decoded by the runtime straight to its header.
    pub fn handle_ack(&mut self, now: Instant, ack: AckHeader) {
        match self.state {
            ClientState::Closed | ClientState::Failed => return,
            ClientState::Connecting => {
                let mut m =
                    Message::new(self.version, Action::SequenceAcknowledgement, Body::Empty);
                m.ack = Some(ack);
                self.handle_handshake(now, m);
                return;
            }
            _ => {}
        }
        let own_ack = Some(&ack.identifier) == self.out.id();
        if !own_ack {
            self.on_remote_activity(now);
        }
        if self.on_ack(now, &ack, own_ack) {
            self.check_closed();
        }
    }

    /// An acknowledgement header of an inbound message (`own`: of our sequence); false when it
    /// broke the protocol (the session has failed).
    fn on_ack(&mut self, now: Instant, ack: &AckHeader, own: bool) -> bool {
        if own {
            if ack.final_ack && self.version == RmVersion::Wsrm11 {
                if let Err(f) = self.out.validate_final(ack) {
                    self.violation(f);
                    return false;
                }
            }
            let events = &mut self.events;
            let r = self
                .out
                .src
                .handle_ack(now, ack, |number| events.push_ack(number));
            match r {
                Err(f) => {
                    self.violation(f);
                    false
                }
                Ok(()) => {
                    // The polling mode follows the quota this ack left (WCF:
                    // OnRemoteActivity(fastPolling) after processing the ack).
                    self.on_remote_activity(now);
                    true
                }
            }
        } else if Some(&ack.identifier) != self.offered.as_ref() {
            self.violation(Fault::unknown_sequence(&ack.identifier));
            false
        } else {
            true
        }
    }

    fn handle_body(&mut self, now: Instant, m: &Message) {
        match &m.body {
            Body::CloseSequenceResponse { identifier } if Some(identifier) == self.out.id() => {
                let own_ack = m.ack.as_ref().filter(|a| a.identifier == *identifier);
                // Peer quirk (Apache CXF 4.2, docs/interop.md CXF quirk 12): the
                // CloseSequenceResponse carries no SequenceAcknowledgement at all. CloseSequence
                // is only sent once every message is acknowledged, so without an ack of its own
                // the response stands for the acknowledgement of exactly 1..last already held
                // (WCF requires a final ack; an ack that is present is still validated).
                let implied = (own_ack.is_none() && self.out.src.all_done()).then(|| {
                    let last = self.out.src.last_assigned();
                    crate::msg::AckHeader {
                        identifier: identifier.clone(),
                        ranges: if last > 0 { vec![(1, last)] } else { vec![] },
                        ..crate::msg::AckHeader::default()
                    }
                });
                match self.out.on_close_response(
                    now,
                    m.relates_to.as_ref(),
                    own_ack.or(implied.as_ref()),
                    &mut self.rng,
                ) {
                    Ok(_) => {}
                    Err(f) => self.violation(f),
                }
            }
            Body::TerminateSequenceResponse { identifier } if Some(identifier) == self.out.id() => {
                self.out.on_terminate_response(m.relates_to.as_ref(), false);
            }
            Body::CloseSequence {
                identifier,
                last_msg_number,
            } => {
                if Some(identifier) == self.offered.as_ref() && self.cfg.shape == Shape::Duplex {
                    let Some(inb) = self.inbound.as_mut() else {
                        return;
                    };
                    match inb.dest.on_close(*last_msg_number) {
                        Ok(()) => {
                            let mut r = Message::new(
                                self.version,
                                Action::CloseSequenceResponse,
                                Body::CloseSequenceResponse {
                                    identifier: identifier.clone(),
                                },
                            );
                            r.relates_to = m.message_id.clone();
                            r.ack = Some(inb.dest.ack_header());
                            self.tx.push_back(r);
                        }
                        Err(f) => self.violation(f),
                    }
                } else if Some(identifier) == self.out.id() {
                    self.violation(Fault::sequence_terminated(
                        FaultCode::Sender,
                        identifier,
                        "The RM destination attempted to close the RM source's sequence.",
                    ));
                }
            }
            Body::TerminateSequence {
                identifier,
                last_msg_number,
            } => {
                if Some(identifier) == self.offered.as_ref() {
                    let rr = self.cfg.shape == Shape::RequestReply;
                    let Some(inb) = self.inbound.as_mut() else {
                        return;
                    };
                    match inb.dest.on_terminate(*last_msg_number) {
                        Ok(_) => {
                            inb.terminated = true;
                            if self.version == RmVersion::Wsrm11 && !rr {
                                let mut r = Message::new(
                                    self.version,
                                    Action::TerminateSequenceResponse,
                                    Body::TerminateSequenceResponse {
                                        identifier: identifier.clone(),
                                    },
                                );
                                r.relates_to = m.message_id.clone();
                                r.ack = Some(inb.dest.ack_header());
                                self.tx.push_back(r);
                            }
                        }
                        Err(f) => {
                            if !rr {
                                self.violation(f);
                            }
                        }
                    }
                } else if Some(identifier) == self.out.id() {
                    self.violation(Fault::sequence_terminated(
                        FaultCode::Sender,
                        identifier,
                        "The RM destination attempted to terminate the RM source's sequence.",
                    ));
                }
            }
            _ => {}
        }
    }

    /// Returns false when the session failed.
    fn on_inbound(&mut self, now: Instant, m: &Message) -> bool {
        let Some(seq) = &m.sequence else { return true };
        let rr = self.cfg.shape == Shape::RequestReply;
        let request = m
            .relates_to
            .as_ref()
            .and_then(|r| self.requests.get(r).copied())
            .filter(|&q| q > 0);
        let Some(inb) = self.inbound.as_mut() else {
            return true;
        };
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let r = inb.dest.on_message(
            seq.number,
            seq.last_message,
            &m.action,
            &m.body,
            m.relates_to.as_ref(),
            true,
            &mut out,
        );
        let mut ok = true;
        match r {
            Incoming::Accepted => {
                self.inbound_seen = true;
                if rr {
                    if let Some(req) = request {
                        // The reply is in our buffer: stop retransmitting the request. Until
                        // the application gets the reply (it may be held behind a gap), a
                        // failure still reports the request as unacknowledged.
                        self.out.src.mark_replied(now, req);
                        self.undelivered_replies.insert(req);
                    }
                } else {
                    inb.note_accepted(now, m.ack_requested.is_some());
                }
                self.emit_deliveries(&mut out);
            }
            Incoming::Duplicate => inb.ack_immediately(),
            Incoming::Dropped => {}
            Incoming::Closed(f) => {
                inb.ack_immediately();
                if !rr {
                    self.queue_fault(f);
                }
            }
            Incoming::Violation(f) => {
                self.violation(f);
                ok = false;
            }
        }
        self.scratch = out;
        ok
    }

    fn handle_fault(&mut self, f: Fault) {
        let id = f.detail.identifier().cloned();
        let ours_out = id.is_some() && id.as_ref() == self.out.id();
        let ours_in = id.is_some() && id.as_ref() == self.offered.as_ref();
        if id.is_some() && !ours_out && !ours_in {
            tracing::debug!("fault for a foreign identifier ignored");
            return;
        }
        if f.kind == FaultKind::UnknownSequence
            && self.state == ClientState::Closing
            && self.out.is_done()
        {
            // The peer already released the session after our TerminateSequence.
            self.check_closed();
            return;
        }
        if ours_out && f.kind == FaultKind::UnknownSequence {
            if self.version == RmVersion::Wsrm11 && self.out.on_terminate_response(None, true) {
                self.check_closed();
                return;
            }
            if self.out.is_done() {
                return;
            }
        }
        if f.kind == FaultKind::SequenceClosed && ours_out {
            // Our message was dropped by a closed destination; the session is not faulted.
            return;
        }
        self.fail(SessionError::RemoteFault(f));
    }

    fn handle_handshake(&mut self, now: Instant, m: Message) {
        // Over request-reply transports (HTTP) an answer travels on the CreateSequence's own
        // response, so a fault without RelatesTo answers it too: a destination that could not
        // read our addressing headers (a WS-Addressing or SOAP version mismatch) cannot say
        // what it relates to. WCF's open fails with such a fault at once.
        let answers_cs = m.relates_to.as_ref() == Some(&self.cs_mid)
            || (m.relates_to.is_none()
                && self.cfg.shape == Shape::RequestReply
                && matches!(m.body, Body::Fault(_)));
        if !answers_cs {
            return;
        }
        match m.body {
            Body::Fault(f) => {
                let refused = matches!(
                    f.kind,
                    FaultKind::CreateSequenceRefused | FaultKind::ConnectionLimitReached
                );
                self.fail(if refused {
                    SessionError::Refused(*f)
                } else {
                    SessionError::RemoteFault(*f)
                });
            }
            Body::CreateSequenceResponse(r) => {
                let bad = match (&self.offered, &r.accept) {
                    (Some(_), None) => Some("The CreateSequenceResponse rejected the offer."),
                    (None, Some(_)) => {
                        Some("The CreateSequenceResponse accepted an offer that was not made.")
                    }
                    (Some(_), Some(acc)) => match &self.cfg.remote_address {
                        Some(remote) if **remote != **acc => {
                            Some("The Accept/AcksTo address differs from the destination address.")
                        }
                        _ => None,
                    },
                    (None, None) => None,
                };
                if let Some(reason) = bad {
                    let f = Fault::sequence_terminated(FaultCode::Sender, &r.identifier, reason);
                    self.out.src.id = Some(r.identifier);
                    self.violation(f);
                    return;
                }
                self.out.src.id = Some(r.identifier.clone());
                // WCF measures from the first attempt; after a retried CreateSequence that
                // inflates the RTT by 10 s per lost attempt, so measure from the last attempt.
                let _ = self.cs_sent_at;
                self.out
                    .src
                    .set_initial_rtt(now.saturating_duration_since(self.cs_last_sent));
                let s = &self.cfg.settings;
                self.out
                    .src
                    .set_max_rto(s.inactivity_timeout / 2 / s.max_retry_count.max(1));
                if let Some(id) = self.offered.clone() {
                    self.inbound = Some(self.new_inbound(id));
                }
                self.state = ClientState::Open;
                self.events.push_back(ClientEvent::Opened {
                    output: r.identifier,
                    input: self.offered.clone(),
                });
                self.on_remote_activity(now);
            }
            _ => {}
        }
    }

    /// Turns messages the inbound destination released into `Reply` (request-reply) or
    /// `Delivered` events.
    fn emit_deliveries(&mut self, out: &mut Vec<Delivered>) {
        let rr = self.cfg.shape == Shape::RequestReply;
        for d in out.drain(..) {
            let action = match d.action {
                Action::Other(a) => a,
                _ => Arc::from(""),
            };
            if rr {
                let req = d
                    .message_id
                    .as_ref()
                    .and_then(|r| self.requests.remove(r))
                    .unwrap_or(0);
                if req > 0 {
                    self.undelivered_replies.remove(&req);
                    self.events.push_back(ClientEvent::Reply {
                        request: req,
                        number: d.number,
                        action,
                        payload: d.payload,
                    });
                }
            } else {
                self.events.push_back(ClientEvent::Delivered {
                    number: d.number,
                    action,
                    payload: d.payload,
                });
            }
        }
    }

    /// The receiving half for the offered sequence `id`.
    fn new_inbound(&self, id: SequenceId) -> Inbound {
        let s = &self.cfg.settings;
        let rr = self.cfg.shape == Shape::RequestReply;
        // Request-reply: reply numbers are assigned by the service in the order it produces
        // replies, so one slow reply can trail the replies to up to two windows of requests
        // (Apache CXF 4.2 under loss, docs/interop.md CXF quirk 13). Replies arrive only on our
        // own exchanges, so the buffer stays bounded by the requests in flight; a window of W
        // would drop the trailing replies and the service has no reply cache to send them
        // again.
        let reply_window = if rr {
            s.max_transfer_window_size.saturating_mul(2)
        } else {
            s.max_transfer_window_size
        };
        let dest = Destination::new(
            id,
            self.version,
            s.ordered,
            reply_window,
            s.flow_control_enabled && !rr,
            true,
        );
        Inbound::new(
            dest,
            !rr,
            s.acknowledgement_interval,
            s.max_transfer_window_size,
        )
    }

    fn check_closed(&mut self) {
        if self.state != ClientState::Closing || !self.out.is_done() {
            return;
        }
        let inbound_done = match (&self.inbound, self.cfg.shape) {
            (Some(i), Shape::Duplex) => i.terminated || i.dest.complete(),
            _ => true,
        };
        if inbound_done {
            self.state = ClientState::Closed;
            self.events.push_back(ClientEvent::Closed);
        }
    }

    fn stamp(&mut self, now: Instant, mut m: Message) -> Message {
        if m.to.is_none() {
            m.to = self.cfg.remote_address.clone();
        }
        // Keep-alive polling is driven by remote silence (F27: "after InactivityTimeout/2
        // without remote activity"), so retransmissions backing off do not suppress it.
        let _ = now;
        m
    }

    fn reply_seq_ack(&self, final_ack: bool) -> Option<crate::msg::AckHeader> {
        if !self.inbound_seen && !final_ack {
            return None;
        }
        let i = self.inbound.as_ref()?;
        let mut a = i.dest.ack_header();
        a.final_ack = final_ack && self.version == RmVersion::Wsrm11;
        Some(a)
    }

    fn attach_ack(&mut self, m: &mut Message) {
        if m.ack.is_some() {
            return;
        }
        match self.cfg.shape {
            Shape::RequestReply => {
                let fin = matches!(
                    m.body,
                    Body::CloseSequence { .. } | Body::TerminateSequence { .. }
                );
                m.ack = self.reply_seq_ack(fin);
            }
            Shape::Duplex => {
                if let Some(i) = self.inbound.as_mut() {
                    m.ack = i.take_piggyback();
                }
            }
        }
    }

    /// The next message to send (for the RequestReply shape: the next HTTP request).
    ///
    /// Called until `None` every turn, so mostly with nothing to send: that case (open or
    /// closing, nothing queued, no control message or (re)transmission pending, no inbound
    /// sequence) is decided inline; everything else is done out of line.
    #[inline]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Message> {
        if self.fast()
            && self.tx.is_empty()
            && matches!(self.state, ClientState::Open | ClientState::Closing)
            && !self.out.control_may_be_due()
            && !self.out.src.has_pending_transmit()
            && self.inbound.is_none()
        {
            return None;
        }
        self.poll_transmit_general(now)
    }

    #[inline(never)]
    fn poll_transmit_general(&mut self, now: Instant) -> Option<Message> {
        if let Some(mut m) = self.tx.pop_front() {
            if !matches!(m.body, Body::Fault(_) | Body::CreateSequence(_)) {
                self.attach_ack(&mut m);
            }
            return Some(self.stamp(now, m));
        }
        if self.state == ClientState::Closed {
            // Flush a last acknowledgement for the inbound sequence.
            let i = self.inbound.as_mut()?;
            let a = i.take_due_ack(now).or_else(|| i.take_piggyback())?;
            let mut m = Message::new(self.version, Action::SequenceAcknowledgement, Body::Empty);
            m.ack = Some(a);
            return Some(self.stamp(now, m));
        }
        if !matches!(self.state, ClientState::Open | ClientState::Closing) {
            return None;
        }
        // `poll_control` and `poll_next` are called only when they may have something: when
        // not, they return `None` and change nothing, and the checks are inline (this runs
        // several times per message, mostly with nothing to send).
        let fast = self.fast();
        if !fast || self.out.control_may_be_due() {
            if let Some(mut m) = self.out.poll_control(now, &mut self.rng) {
                self.attach_ack(&mut m);
                let m = self.stamp(now, m);
                if self.version == RmVersion::Wsrm10 && m.action == Action::TerminateSequence {
                    self.terminate_copy = Some((m.clone(), crate::source::FAST_RETRIES));
                }
                self.check_closed();
                return Some(m);
            }
        }
        if fast && !self.out.src.has_pending_transmit() {
            return self.poll_inbound_ack(now);
        }
        match self.out.src.poll_next(now) {
            Err(SourceFailure::RetryExhausted(number)) => {
                let tell = self.cfg.terminate_on_retry_exhausted;
                if let Some(id) = self.out.id().cloned().filter(|_| tell) {
                    self.queue_fault(Fault::sequence_terminated(
                        FaultCode::Receiver,
                        &id,
                        "The user specified maximum retry count for a particular message has been exceeded. Because of this the reliable session cannot continue.",
                    ));
                }
                let error = if self.out.src.acknowledged_without_reply(number) {
                    SessionError::NoReply { number }
                } else {
                    SessionError::RetryExhausted { number }
                };
                self.fail(error);
                return self.tx.pop_front().map(|m| self.stamp(now, m));
            }
            Ok(Some(t)) => {
                // What `attach_ack` and `stamp` add to a sequence message, built in place.
                let ack = match self.cfg.shape {
                    Shape::RequestReply => self.reply_seq_ack(false),
                    Shape::Duplex => self.inbound.as_mut().and_then(|i| i.take_piggyback()),
                };
                let to = self.cfg.remote_address.clone();
                if let Some(m) = self.out.src.build(t, to, ack) {
                    return Some(m);
                }
            }
            Ok(None) => {}
        }
        self.poll_inbound_ack(now)
    }

    /// A standalone acknowledgement for the inbound sequence, if one is due.
    fn poll_inbound_ack(&mut self, now: Instant) -> Option<Message> {
        let i = self.inbound.as_mut()?;
        let a = i.take_due_ack(now)?;
        let mut m = Message::new(self.version, Action::SequenceAcknowledgement, Body::Empty);
        m.ack = Some(a);
        Some(self.stamp(now, m))
    }

    /// Drives timers: CreateSequence retries, retransmissions, keep-alive, inactivity, ack
    /// batching, close deadlines.
    ///
    /// Called every turn and rarely with anything due: the check that nothing is (open or
    /// closing, no close deadline, neither the inactivity nor the keep-alive nor the retry
    /// timer due) is inline; everything else is done out of line.
    #[inline]
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.fast()
            && matches!(self.state, ClientState::Open | ClientState::Closing)
            && self.out.close_deadline.is_none()
            && self.idle_deadline.is_none_or(|d| now < d)
            && !self.out.src.retry_due(now)
        {
            return;
        }
        self.timers(now);
    }

    #[inline(never)]
    fn timers(&mut self, now: Instant) {
        match self.state {
            ClientState::Closed | ClientState::Failed => {}
            ClientState::Connecting => self.handshake_timers(now),
            ClientState::Open | ClientState::Closing => {
                // Neither the inactivity nor the keep-alive timer is due before `idle_deadline`.
                let idle_due = self.idle_deadline.is_some_and(|d| now >= d);
                if idle_due && self.inactivity_deadline().is_some_and(|d| now >= d) {
                    self.inactivity_expired();
                    return;
                }
                if !matches!(self.out.stage, Stage::Done)
                    && self.out.close_deadline.is_some_and(|d| now >= d)
                {
                    self.fail(SessionError::CloseTimeout);
                    return;
                }
                if self.state == ClientState::Closing
                    && self.out.is_done()
                    && self.out.close_deadline.is_some_and(|d| now >= d)
                {
                    self.fail(SessionError::CloseTimeout);
                    return;
                }
                self.out.src.handle_timeout(now);
                if idle_due
                    && self.keepalive_deadline.is_some_and(|d| now >= d)
                    && !self.out.is_done()
                {
                    self.keepalive_expired(now);
                }
            }
        }
    }

    /// Connecting: the open timeout, and the CreateSequence retry (out of line: the clone of
    /// the CreateSequence gave `handle_timeout` a large frame in every state).
    #[inline(never)]
    fn handshake_timers(&mut self, now: Instant) {
        if now >= self.open_deadline {
            self.fail(SessionError::OpenTimeout);
        } else if now >= self.cs_next {
            self.tx.push_back(self.cs.clone());
            self.cs_last_sent = now;
            self.cs_next = now + REQUESTOR_RETRY_INTERVAL;
        }
    }

    /// InactivityTimeout passed without remote activity: SequenceTerminated, and the session
    /// fails.
    #[cold]
    #[inline(never)]
    fn inactivity_expired(&mut self) {
        if let Some(id) = self.out.id().cloned() {
            self.queue_fault(Fault::sequence_terminated(
                FaultCode::Receiver,
                &id,
                format!(
                    "The inactivity timeout of ({:?}) has been exceeded.",
                    self.cfg.settings.inactivity_timeout
                ),
            ));
        }
        self.fail(SessionError::InactivityTimeout);
    }

    /// The keep-alive timer expired: AckRequested, and the next poll is scheduled.
    #[inline(never)]
    fn keepalive_expired(&mut self, now: Instant) {
        if let Some(id) = self.out.id().cloned() {
            let mut m = Message::new(self.version, Action::AckRequested, Body::Empty);
            m.ack_requested = Some(id);
            self.tx.push_back(m);
        }
        if self.keepalive_mode == KeepAlive::Idle {
            self.keepalive_mode = KeepAlive::Polling;
        }
        if self.keepalive_mode == KeepAlive::Fast {
            self.fast_polls = self.fast_polls.saturating_add(1);
        }
        self.keepalive_deadline = Some(now + self.interval(self.keepalive_mode));
        self.idle_deadline = min_deadline(self.inactivity_deadline(), self.keepalive_deadline);
    }

    /// The earliest instant at which `handle_timeout` must be called.
    ///
    /// Called every turn. Open, not closing, without an inbound sequence (one-way), no stage or
    /// close deadline counts and the keep-alive does: the retry timer and `idle_deadline` give
    /// the answer, inline; everything else is computed out of line.
    #[inline]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == ClientState::Open
            && self.fast()
            && matches!(self.out.stage, Stage::Open)
            && self.out.close_deadline.is_none()
            && self.inbound.is_none()
        {
            return min_deadline(self.out.src.poll_timeout(), self.idle_deadline);
        }
        self.next_deadline()
    }

    #[inline(never)]
    fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            ClientState::Closed | ClientState::Failed => None,
            ClientState::Connecting => Some(self.cs_next.min(self.open_deadline)),
            _ => {
                let closing_deadline = if self.state == ClientState::Closing {
                    self.out.close_deadline
                } else {
                    None
                };
                let keepalive = if self.out.is_done() {
                    None
                } else {
                    self.keepalive_deadline
                };
                let t = earliest(self.out.poll_timeout(), self.inactivity_deadline());
                let t = earliest(t, keepalive);
                let t = earliest(t, self.inbound.as_ref().and_then(|i| i.poll_timeout()));
                earliest(t, closing_deadline)
            }
        }
    }

    /// Whether `poll_transmit` would return a message now (lets runtimes avoid polling).
    pub fn has_transmit(&self, now: Instant) -> bool {
        !self.tx.is_empty()
            || (matches!(self.state, ClientState::Open | ClientState::Closing)
                && (self.out.src.has_pending_transmit()
                    || self.out.control_due(now)
                    || self.inbound.as_ref().is_some_and(|i| i.ack_due(now))))
    }

    /// Next event. Inline: polled until `None` every turn.
    #[inline]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }
}

// Durable sessions (issue 6): resuming a stored outbound sequence.
impl ClientSession {
    /// Resumes a session from a stored [`crate::snapshot::SourceSnapshot`] after a restart:
    /// the session starts `Open` on the stored sequence (no CreateSequence), queues every
    /// unacknowledged message for retransmission (with the stored MessageIDs), and numbers new
    /// messages from `next_number`. An `Opened` event is queued as for a new session. The RTT
    /// estimate starts from WCF's unknown-initiation value (2 s).
    ///
    /// Request-reply sessions (`cfg.pattern == RequestReply`) also restore the offered reply
    /// sequence from [`crate::snapshot::SourceSnapshot::replies`]: its received ranges (the
    /// acknowledgements the service sees continue where they were), and the replies received
    /// but not yet handed to the application, which come out again as `Reply` events (in
    /// order when Ordered; each names its request's number). A stored request whose reply is
    /// among them is not sent again. Every other stored request is retransmitted until its
    /// reply arrives, even if it had been acknowledged: the service answers a retransmitted
    /// request with its cached reply.
    pub fn resume(
        now: Instant,
        cfg: ClientConfig,
        snapshot: crate::snapshot::SourceSnapshot,
        seed: u64,
    ) -> Result<Self, crate::snapshot::RestoreError> {
        use crate::snapshot::{check_ascending, RestoreError};
        let rr = match (cfg.pattern, &snapshot.replies) {
            (Pattern::OneWay, None) => false,
            (Pattern::RequestReply, Some(_)) => true,
            _ => return Err(RestoreError::UnsupportedPattern),
        };
        let configured = cfg.settings.reliable_messaging_version;
        if snapshot.version != configured {
            return Err(RestoreError::VersionMismatch {
                stored: snapshot.version,
                configured,
            });
        }
        if snapshot.next_number == 0 || snapshot.next_number > crate::msg::MAX_MESSAGE_NUMBER {
            return Err(RestoreError::Invalid(format!(
                "next number {} out of range",
                snapshot.next_number
            )));
        }
        check_ascending(&snapshot.unacknowledged, Some(snapshot.next_number))?;
        let mut s = ClientSession::new(now, cfg, seed)?;
        s.tx.clear();
        s.out.src.id = Some(snapshot.id.clone());
        let mut unacknowledged = snapshot.unacknowledged;
        let mut input = None;
        if let (true, Some(replies)) = (rr, snapshot.replies) {
            check_ascending(&replies.undelivered, None)?;
            let mut prev = 0;
            for &(a, b) in &replies.ranges {
                if a <= prev || b < a || b > crate::msg::MAX_MESSAGE_NUMBER {
                    return Err(RestoreError::Invalid(format!(
                        "reply range {a}-{b} out of order or range"
                    )));
                }
                prev = b;
            }
            if replies.ranges.len() > crate::ranges::MAX_SEQUENCE_RANGES {
                return Err(RestoreError::Invalid(format!(
                    "{} reply ranges (at most {})",
                    replies.ranges.len(),
                    crate::ranges::MAX_SEQUENCE_RANGES
                )));
            }
            // Every stored two-way request can be answered again.
            for m in &unacknowledged {
                if let Some(mid) = &m.message_id {
                    s.requests.insert(mid.clone(), m.number);
                }
            }
            // A request whose reply is stored is answered: it counts as acknowledged (the
            // service received it, since it replied) and is not sent again.
            let answered: std::collections::HashSet<&Arc<str>> = replies
                .undelivered
                .iter()
                .filter_map(|r| r.message_id.as_ref())
                .collect();
            unacknowledged.retain(|m| {
                let done = m
                    .message_id
                    .as_ref()
                    .is_some_and(|mid| answered.contains(mid));
                if done {
                    s.undelivered_replies.insert(m.number);
                }
                !done
            });
            let mut inbound = s.new_inbound(replies.id.clone());
            let held = replies
                .undelivered
                .into_iter()
                .map(|r| Delivered {
                    number: r.number,
                    action: Action::Other(r.action),
                    payload: r.payload,
                    message_id: r.message_id,
                })
                .collect();
            let mut out = Vec::new();
            inbound.dest.restore(
                &replies.ranges,
                replies.last_number,
                replies.delivered_through,
                held,
                &mut out,
            );
            s.inbound_seen = !replies.ranges.is_empty();
            s.inbound = Some(inbound);
            s.offered = Some(replies.id.clone());
            input = Some(replies.id);
            s.emit_deliveries(&mut out);
        }
        s.out.src.restore(now, snapshot.next_number, unacknowledged);
        s.state = ClientState::Open;
        s.events.push_front(ClientEvent::Opened {
            output: snapshot.id,
            input,
        });
        s.on_remote_activity(now);
        Ok(s)
    }

    /// The number the next queued message will get.
    pub fn next_number(&self) -> u64 {
        self.out.src.next_number()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{AckHeader, CreateSequenceResponse, SequenceHeader};
    use crate::ranges::RangeSet;
    use rand::Rng;

    /// Everything a runtime sees after an input, polled in the runtime's order.
    type Observed = (
        bool,
        Vec<Message>,
        SessionStats,
        Vec<ClientEvent>,
        ClientState,
        Option<Instant>,
        Option<SequenceId>,
        u64,
    );

    fn observe(c: &mut ClientSession, now: Instant) -> Observed {
        let has = c.has_transmit(now);
        let mut tx = Vec::new();
        while let Some(m) = c.poll_transmit(now) {
            tx.push(m);
            assert!(tx.len() < 100_000, "poll_transmit does not end");
        }
        let stats = c.stats();
        let mut ev = Vec::new();
        while let Some(e) = c.poll_event() {
            ev.push(e);
        }
        (
            has,
            tx,
            stats,
            ev,
            c.state(),
            c.poll_timeout(),
            c.output_id().cloned(),
            c.next_number(),
        )
    }

    /// A hostile or odd acknowledgement: ranges beyond what was sent, overlapping, unsorted,
    /// `lower > upper`, zero, huge numbers; Nacks, None, Final, BufferRemaining.
    fn hostile_ranges(rng: &mut SmallRng, hs: u64) -> Vec<(u64, u64)> {
        let n = rng.random_range(0..4);
        (0..n)
            .map(|_| match rng.random_range(0..6) {
                0 => (1, hs + rng.random_range(1..3)),
                1 => (rng.random_range(0..hs + 3), rng.random_range(0..hs + 3)),
                2 => (u64::MAX - rng.random_range(0..2), u64::MAX),
                3 => (0, rng.random_range(0..hs + 1)),
                4 => (1, rng.random_range(0..hs + 1)),
                _ => {
                    let l = rng.random_range(1..hs + 2);
                    (l, l.saturating_sub(rng.random_range(0..2)))
                }
            })
            .collect()
    }

    /// Drives a session taking the fast paths and one taking only the general paths with the
    /// same inputs (sends, requests, in-order, selective, stale and hostile acknowledgements,
    /// replies, faults, losses, timeouts, transport failures, empty answers, close, abort) and
    /// requires the same observable outcome after every input.
    fn fast_path_matches_general(
        pattern: Pattern,
        shape: Shape,
        version: RmVersion,
        window: u32,
        seed: u64,
    ) {
        let remote: Arc<str> = Arc::from("http://127.0.0.1:8080/svc");
        let mut cfg = ClientConfig::new(pattern, shape);
        cfg.settings.max_transfer_window_size = window;
        cfg.settings.reliable_messaging_version = version;
        cfg.remote_address = Some(remote.clone());
        let mut now = Instant::now();
        let mut fast = ClientSession::new(now, cfg.clone(), seed).expect("config");
        let mut general = ClientSession::new(now, cfg, seed).expect("config");
        general.set_general_only();
        let mut rng = SmallRng::seed_from_u64(seed);
        let both = |f: &mut ClientSession,
                    g: &mut ClientSession,
                    now: Instant,
                    step: usize,
                    input: &dyn Fn(&mut ClientSession)|
         -> Observed {
            input(f);
            input(g);
            let a = observe(f, now);
            let b = observe(g, now);
            assert_eq!(a, b, "step {step}");
            a
        };
        let first = both(&mut fast, &mut general, now, 0, &|_| {});
        let cs = first.1.first().cloned().expect("CreateSequence");
        let out = SequenceId::from("urn:uuid:out");
        let offered = fast.input_id().cloned();
        let mut csr = Message::new(
            version,
            Action::CreateSequenceResponse,
            Body::CreateSequenceResponse(Box::new(CreateSequenceResponse {
                identifier: out.clone(),
                expires: None,
                incomplete_sequence_behavior: None,
                accept: offered.as_ref().map(|_| remote.to_string()),
            })),
        );
        csr.relates_to = cs.message_id.clone();
        now += Duration::from_millis(3);
        let mut wire: Vec<Message> = both(&mut fast, &mut general, now, 0, &|c| {
            c.handle_message(now, csr.clone())
        })
        .1;
        // The destination's side: what arrived, and the acks it wrote.
        let mut received = RangeSet::new();
        let mut old_acks: Vec<Vec<(u64, u64)>> = Vec::new();
        let mut requests: Vec<Arc<str>> = Vec::new();
        let mut reply_number = 0u64;
        // Inputs that end the session (hostile acks, Final, a foreign identifier, faults,
        // abort) only from this step on, so that most of a run has the session open.
        let hostile_from = rng.random_range(200..3000);
        for step in 1..3000 {
            let hostile = step >= hostile_from;
            // The messages put on the wire arrive (most of them).
            for m in wire.drain(..) {
                if let Some(s) = &m.sequence {
                    if rng.random_range(0..20) < 19 {
                        received.insert(s.number);
                        if let Some(mid) = &m.message_id {
                            requests.push(mid.clone());
                        }
                    }
                }
            }
            let hs = fast.out.src.highest_sent();
            now += Duration::from_micros(rng.random_range(0..3000));
            let r = rng.random_range(0..1000);
            let input: Box<dyn Fn(&mut ClientSession)> = if r < 250 {
                let k = rng.random_range(1..4);
                let two_way = pattern == Pattern::RequestReply && rng.random_bool(0.5);
                Box::new(move |c: &mut ClientSession| {
                    for _ in 0..k {
                        let a: Arc<str> = Arc::from("urn:test/op");
                        let p = Bytes::from_static(b"payload");
                        let _ = if two_way {
                            c.request(now, a, p)
                        } else {
                            c.send(now, a, p)
                        };
                    }
                })
            } else if r < 800 {
                // An acknowledgement: in order (the common case), what arrived, an old one
                // again, or hostile.
                let prefix = received.contiguous_prefix();
                let mut a = AckHeader {
                    identifier: out.clone(),
                    ranges: match rng.random_range(0..20) {
                        0..=10 if prefix > 0 => vec![(1, prefix)],
                        0..=12 => received.ranges().to_vec(),
                        13 => {
                            // Valid but not canonical: unsorted, a range twice.
                            let mut v = received.ranges().to_vec();
                            v.reverse();
                            if let Some(&r) = v.first() {
                                v.push(r);
                            }
                            v
                        }
                        14..=15 if !old_acks.is_empty() => {
                            old_acks[rng.random_range(0..old_acks.len())].clone()
                        }
                        16..=17 if hostile => hostile_ranges(&mut rng, hs),
                        _ if prefix > 0 => vec![(1, prefix)],
                        _ => Vec::new(),
                    },
                    ..AckHeader::default()
                };
                old_acks.push(a.ranges.clone());
                if rng.random_bool(0.3) {
                    a.buffer_remaining = Some(rng.random_range(0..2 * window));
                }
                if rng.random_range(0..40) == 0 {
                    a.nacks = vec![rng.random_range(1..hs + 3)];
                }
                if rng.random_range(0..60) == 0 {
                    a.none = true;
                }
                if hostile && rng.random_range(0..20) == 0 {
                    a.final_ack = true;
                }
                if hostile && rng.random_range(0..20) == 0 {
                    a.identifier = SequenceId::from("urn:uuid:foreign");
                }
                let mut m = Message::new(version, Action::SequenceAcknowledgement, Body::Empty);
                m.ack = Some(a);
                Box::new(move |c: &mut ClientSession| c.handle_message(now, m.clone()))
            } else if r < 850 && offered.is_some() && !requests.is_empty() {
                // A reply (request-reply), carrying an ack now and then.
                let i = rng.random_range(0..requests.len());
                let mid = requests.swap_remove(i);
                reply_number += 1;
                let mut m = Message::new(
                    version,
                    Action::Other(Arc::from("urn:test/reply")),
                    Body::Application(Bytes::from_static(b"reply")),
                );
                m.relates_to = Some(mid);
                m.sequence = Some(SequenceHeader {
                    identifier: offered.clone().expect("offered"),
                    number: reply_number,
                    last_message: false,
                });
                if rng.random_bool(0.5) && received.contiguous_prefix() > 0 {
                    m.ack = Some(AckHeader {
                        identifier: out.clone(),
                        ranges: vec![(1, received.contiguous_prefix())],
                        ..AckHeader::default()
                    });
                }
                Box::new(move |c: &mut ClientSession| c.handle_message(now, m.clone()))
            } else if r < 900 {
                // Time passes: retransmissions, keep-alive, now and then inactivity.
                let ms = match rng.random_range(0..20) {
                    0 => 400_000,
                    1..=5 => rng.random_range(0..10_000),
                    _ => rng.random_range(0..500),
                };
                now += Duration::from_millis(ms);
                Box::new(|_: &mut ClientSession| {})
            } else if r < 940 {
                let n = rng.random_range(0..hs + 2);
                let which = rng.random_range(0..3);
                Box::new(move |c: &mut ClientSession| match which {
                    0 => c.handle_transport_failure(now, Some(n)),
                    1 => c.handle_empty_answer(now, n, now),
                    _ => c.handle_transport_failure(now, None),
                })
            } else if r < 945 && step > 2000 {
                Box::new(move |c: &mut ClientSession| {
                    let _ = c.close(now);
                })
            } else if r < 946 && hostile {
                Box::new(move |c: &mut ClientSession| c.abort(now))
            } else if r < 948 && hostile {
                let f = Fault::sequence_terminated(FaultCode::Sender, &out, "test");
                let m = Message::new(version, Action::Fault, Body::Fault(Box::new(f)));
                Box::new(move |c: &mut ClientSession| c.handle_message(now, m.clone()))
            } else {
                Box::new(|_: &mut ClientSession| {})
            };
            let input = move |c: &mut ClientSession| {
                c.handle_timeout(now);
                input(c);
            };
            wire = both(&mut fast, &mut general, now, step, &input).1;
            if fast.state() == ClientState::Failed {
                break;
            }
        }
    }

    #[test]
    fn fast_paths_match_general_paths_one_way() {
        for seed in 0..48 {
            for version in [RmVersion::Wsrm10, RmVersion::Wsrm11] {
                for window in [8, 64] {
                    fast_path_matches_general(
                        Pattern::OneWay,
                        Shape::RequestReply,
                        version,
                        window,
                        seed,
                    );
                }
            }
        }
    }

    #[test]
    fn fast_paths_match_general_paths_request_reply_and_duplex() {
        for seed in 0..32 {
            for version in [RmVersion::Wsrm10, RmVersion::Wsrm11] {
                fast_path_matches_general(
                    Pattern::RequestReply,
                    Shape::RequestReply,
                    version,
                    8,
                    seed,
                );
                fast_path_matches_general(Pattern::OneWay, Shape::Duplex, version, 16, seed);
            }
        }
    }

    proptest::proptest! {
        /// The fast-polling interval in microseconds equals the `Duration` formula it
        /// replaced.
        #[test]
        fn prop_fast_poll_interval_is_the_duration_formula(
            rtt_us in proptest::prop_oneof![0u64..100_000, 0u64..=(i64::MAX as u64)],
            fast_polls in 0u32..40,
            send_ms in 1u64..10_000_000,
            ka_ms in 1u64..3_000_000_000,
        ) {
            let send_timeout = Duration::from_millis(send_ms);
            let ka = Duration::from_millis(ka_ms);
            let cap = (send_timeout / 2).min(ka);
            let base = (Duration::from_micros(rtt_us) * 2).max(Duration::from_millis(20));
            let factor = 1u32 << fast_polls.min(16);
            let expect = base.saturating_mul(factor).min(cap);
            proptest::prop_assert_eq!(fast_poll_interval(rtt_us, fast_polls, cap), expect);
        }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn window_entry_is_128_bytes() {
        // Moved with inline stores rather than a `memcpy` call (see `Entry::rtt_sample_us`).
        assert!(std::mem::size_of::<crate::source::Entry>() <= 128);
    }
}
