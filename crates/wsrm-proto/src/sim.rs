//! Deterministic network simulator: a [`ClientSession`] and an [`Endpoint`] connected by a lossy
//! link, driven in virtual time (no sleeping), with a seeded RNG so every run is reproducible.
//!
//! The link can lose, duplicate, delay (uniform delay distribution) and reorder (extra delay
//! for a fraction of messages) messages, be partitioned (down for a period), and lose the
//! reverse direction more than the forward one (asymmetric loss: acks lost more than data).
//!
//! * One-way and request-reply run over the [`Shape::RequestReply`] shape: every client message
//!   is an HTTP exchange; a lost request means the service never sees it, a lost response is
//!   the "ack lost" case; the response rides back on the same exchange. A duplicated request
//!   reaches the service twice, as two exchanges.
//! * Duplex runs over the [`Shape::Duplex`] shape: both directions are independent one-way
//!   links; the service echoes every delivered message on its own sequence and closes it.
//!
//! [`run`] checks every delivery against what the sender was told and returns a [`RunOutcome`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::{ClientConfig, ClientSession};
use crate::msg::Message;
use crate::server::{Endpoint, EndpointConfig};
use crate::settings::Settings;
use crate::types::{
    ClientEvent, ClientState, ExchangeId, Pattern, ReplyToken, ServerEvent, SessionId, Shape,
};

/// Link impairments.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Loss probability client → service (requests, data).
    pub loss: f64,
    /// Loss probability service → client (responses, acks, replies).
    pub reverse_loss: f64,
    /// Duplication probability (each message, each direction; responses are never duplicated).
    pub dup: f64,
    /// Probability that a message gets an extra delay of up to `reorder_delay` (reordering).
    pub reorder: f64,
    /// Minimum one-way delay.
    pub delay_min: Duration,
    /// Maximum one-way delay (uniform between min and max).
    pub delay_max: Duration,
    /// Maximum extra delay of a reordered message.
    pub reorder_delay: Duration,
    /// Link down for this long, starting at `partition_start` (everything sent is lost).
    pub partition: Option<Duration>,
    /// When the partition starts (virtual time since the run began).
    pub partition_start: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            loss: 0.0,
            reverse_loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(10),
            reorder_delay: Duration::from_millis(50),
            partition: None,
            partition_start: Duration::from_millis(200),
        }
    }
}

/// One simulation run's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Exchange pattern (one-way and request-reply over HTTP, duplex over a duplex link).
    pub pattern: Pattern,
    /// Reliable-session settings of both ends.
    pub settings: Settings,
    /// Application messages the client sends (and, duplex, the service echoes back).
    pub messages: usize,
    /// Link impairments.
    pub link: LinkConfig,
    /// Longest service think time before a reply (uniform from 0).
    pub reply_delay_max: Duration,
    /// Open timeout; `None` = 10 s × (1 + MaxRetryCount), i.e. as many CreateSequence attempts
    /// as a message gets transmissions. The close timeout is the larger of this and
    /// InactivityTimeout.
    pub handshake_timeout: Option<Duration>,
    /// Virtual-time limit of a run.
    pub time_limit: Duration,
}

impl SimConfig {
    /// Defaults: WCF settings, 100 messages, a clean link.
    pub fn new(pattern: Pattern) -> Self {
        SimConfig {
            pattern,
            settings: Settings::default(),
            messages: 100,
            link: LinkConfig::default(),
            reply_delay_max: Duration::from_millis(5),
            handshake_timeout: None,
            time_limit: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The verdict of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOutcome {
    /// The seed.
    pub seed: u64,
    /// Messages (both directions, requests and replies) whose accounting was checked.
    pub checked: u64,
    /// Lost: acknowledged to the sender but never delivered, or neither delivered nor reported
    /// as unacknowledged.
    pub lost: u64,
    /// Delivered more than once (or a request executed twice).
    pub duplicated: u64,
    /// Delivered out of order although Ordered.
    pub out_of_order: u64,
    /// A session failed (retry exhaustion, timeouts): counted, not a loss.
    pub failed_session: bool,
    /// Human-readable problems (empty when the run is clean).
    pub problems: Vec<String>,
    /// How the client session ended.
    pub client_end: String,
    /// How the service session ended (empty if it was still open at the end).
    pub server_end: String,
    /// Client retransmissions.
    pub retransmitted: u64,
    /// Virtual time the run took.
    pub virtual_time: Duration,
}

impl RunOutcome {
    /// No loss, no duplicate, no disorder.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.problems.is_empty()
    }
}

#[derive(Debug)]
enum Ev {
    ToServer(Message, Option<ExchangeId>),
    ToClient(Message),
    Reply(ReplyToken, Bytes),
}

struct Queued {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> Ordering {
        // Min-heap by (time, insertion order).
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct World {
    base: Instant,
    rng: SmallRng,
    link: LinkConfig,
    q: BinaryHeap<Queued>,
    seq: u64,
    next_ex: u64,
}

impl World {
    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.q.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn partitioned(&self, now: Instant) -> bool {
        match self.link.partition {
            Some(len) => {
                let t = now.saturating_duration_since(self.base);
                t >= self.link.partition_start && t < self.link.partition_start + len
            }
            None => false,
        }
    }

    fn delay(&mut self) -> Duration {
        let lo = self.link.delay_min.as_micros() as u64;
        let hi = (self.link.delay_max.as_micros() as u64).max(lo);
        let mut d = Duration::from_micros(self.rng.random_range(lo..=hi));
        if self.link.reorder > 0.0 && self.rng.random_bool(self.link.reorder.clamp(0.0, 1.0)) {
            let x = self.link.reorder_delay.as_micros() as u64;
            d += Duration::from_micros(self.rng.random_range(0..=x));
        }
        d
    }

    fn lost(&mut self, now: Instant, p: f64) -> bool {
        self.partitioned(now) || (p > 0.0 && self.rng.random_bool(p.clamp(0.0, 1.0)))
    }

    fn dup(&mut self) -> bool {
        self.link.dup > 0.0 && self.rng.random_bool(self.link.dup.clamp(0.0, 1.0))
    }
}

#[derive(Default)]
struct Ledger {
    /// number → deliveries
    delivered: BTreeMap<u64, u32>,
    order: Vec<u64>,
    acked: Vec<u64>,
    unacked_reported: Option<Vec<u64>>,
    closed_ok: bool,
}

impl Ledger {
    fn deliver(&mut self, n: u64) {
        *self.delivered.entry(n).or_insert(0) += 1;
        self.order.push(n);
    }
}

fn check(name: &str, ledger: &Ledger, total: u64, ordered: bool, out: &mut RunOutcome) {
    let acked: std::collections::HashSet<u64> = ledger.acked.iter().copied().collect();
    let reported: Option<std::collections::BTreeSet<u64>> = ledger
        .unacked_reported
        .as_ref()
        .map(|v| v.iter().copied().collect());
    // With Ordered, messages acknowledged but held behind a gap are discarded when the
    // session fails (IncompleteSequenceBehavior DiscardFollowingFirstGap).
    let first_gap = reported.as_ref().and_then(|r| r.iter().next().copied());
    for n in 1..=total {
        out.checked += 1;
        let d = ledger.delivered.get(&n).copied().unwrap_or(0);
        if d > 1 {
            out.duplicated += 1;
            out.problems
                .push(format!("{name} #{n} delivered {d} times"));
        }
        if d == 0 {
            let reported_undelivered = reported.as_ref().is_some_and(|r| r.contains(&n));
            let discarded_after_gap =
                ordered && !ledger.closed_ok && first_gap.is_some_and(|g| n > g);
            if ledger.closed_ok || acked.contains(&n) && !discarded_after_gap {
                out.lost += 1;
                out.problems
                    .push(format!("{name} #{n} acknowledged but never delivered"));
            } else if !reported_undelivered && !discarded_after_gap {
                out.lost += 1;
                out.problems.push(format!(
                    "{name} #{n} neither delivered nor reported unacknowledged"
                ));
            }
        }
    }
    if ordered {
        for (expect, &n) in (1u64..).zip(ledger.order.iter()) {
            if n != expect {
                out.out_of_order += 1;
                out.problems.push(format!(
                    "{name} #{n} delivered out of order (expected #{expect})"
                ));
                break;
            }
        }
    }
}

/// Runs one seeded simulation and checks exactly-once (and in-order) delivery.
pub fn run(cfg: &SimConfig, seed: u64) -> RunOutcome {
    let base = Instant::now();
    let mut now = base;
    let shape = match cfg.pattern {
        Pattern::Duplex => Shape::Duplex,
        _ => Shape::RequestReply,
    };
    let mut out = RunOutcome {
        seed,
        ..RunOutcome::default()
    };
    let hs = cfg.handshake_timeout.unwrap_or_else(|| {
        Duration::from_secs(10) * (1 + cfg.settings.max_retry_count.min(100_000))
    });
    let mut ccfg = ClientConfig::new(cfg.pattern, shape);
    ccfg.settings = cfg.settings.clone();
    // Closing waits for the peer's last messages, whose retransmissions are spaced up to
    // InactivityTimeout/(2·MaxRetryCount) apart: (1 + MaxRetryCount) of them fit in about
    // InactivityTimeout/2, so the close timeout is the larger of that and the handshake budget.
    let close_timeout = hs.max(cfg.settings.inactivity_timeout);
    ccfg.open_timeout = hs;
    ccfg.close_timeout = close_timeout;
    ccfg.remote_address = Some(Arc::from("http://sim.invalid/service"));
    if shape == Shape::Duplex {
        ccfg.local_address = Arc::from("http://sim.invalid/client");
    }
    let mut client = match ClientSession::new(now, ccfg, seed.wrapping_mul(2).wrapping_add(1)) {
        Ok(c) => c,
        Err(e) => {
            out.problems.push(format!("client config: {e}"));
            return out;
        }
    };
    let ecfg = EndpointConfig {
        settings: cfg.settings.clone(),
        address: Some(Arc::from("http://sim.invalid/service")),
        ..EndpointConfig::default()
    };
    let mut server = match Endpoint::new(ecfg, seed.wrapping_mul(2).wrapping_add(2)) {
        Ok(s) => s,
        Err(e) => {
            out.problems.push(format!("endpoint config: {e}"));
            return out;
        }
    };
    let mut w = World {
        base,
        rng: SmallRng::seed_from_u64(seed ^ 0x005e_ed0f_11ce),
        link: cfg.link.clone(),
        q: BinaryHeap::new(),
        seq: 0,
        next_ex: 1,
    };
    let total = cfg.messages as u64;
    let ordered = cfg.settings.ordered;
    let action: Arc<str> = Arc::from("urn:wsrm:sim/op");
    // Client → service ledger (one-way data, requests as executed by the service).
    let mut up = Ledger::default();
    // Service → client ledger (replies, duplex echoes).
    let mut down = Ledger::default();
    let mut request_payload: HashMap<u64, Bytes> = HashMap::new();
    for i in 1..=total {
        let payload = Bytes::from(format!("m{i}"));
        let r = match cfg.pattern {
            Pattern::RequestReply => client.request(now, action.clone(), payload.clone()),
            _ => client.send(now, action.clone(), payload.clone()),
        };
        match r {
            Ok(n) if n == i => {
                request_payload.insert(n, payload);
            }
            other => out.problems.push(format!("send #{i} returned {other:?}")),
        }
    }
    let mut server_session: Option<SessionId> = None;
    let mut server_sent = 0u64;
    let mut server_closing = false;
    let mut server_done = false;
    let limit = base + cfg.time_limit;
    let mut steps: u64 = 0;
    let max_steps: u64 = 2_000_000 + 20_000 * total;
    loop {
        // Pump until quiescent at `now`.
        loop {
            steps += 1;
            if steps > max_steps {
                break;
            }
            let mut progress = false;
            while let Some(m) = client.poll_transmit(now) {
                progress = true;
                if w.lost(now, w.link.loss) {
                    continue;
                }
                let copies = if w.dup() { 2 } else { 1 };
                for _ in 0..copies {
                    let ex = (shape == Shape::RequestReply).then(|| {
                        w.next_ex += 1;
                        ExchangeId(w.next_ex)
                    });
                    let at = now + w.delay();
                    w.push(at, Ev::ToServer(m.clone(), ex));
                }
            }
            while let Some(t) = server.poll_transmit(now) {
                progress = true;
                let Some(m) = t.message else { continue };
                if w.lost(now, w.link.reverse_loss) {
                    continue;
                }
                let copies = if t.exchange.is_none() && w.dup() {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    let at = now + w.delay();
                    w.push(at, Ev::ToClient(m.clone()));
                }
            }
            while let Some(e) = client.poll_event() {
                progress = true;
                match e {
                    ClientEvent::Opened { .. } => {}
                    ClientEvent::Acknowledged { number } => up.acked.push(number),
                    ClientEvent::Reply {
                        request,
                        number: _,
                        action: _,
                        payload,
                    } => {
                        up.acked.push(request);
                        let expect = request_payload
                            .get(&request)
                            .map(|p| [b"reply:".as_slice(), p].concat());
                        if expect.as_deref() != Some(&payload[..]) {
                            out.problems
                                .push(format!("reply to request #{request} has the wrong body"));
                        }
                        down.deliver(request);
                    }
                    ClientEvent::Delivered { number, .. } => down.deliver(number),
                    ClientEvent::Closed => {
                        up.closed_ok = true;
                        out.client_end = "closed".into();
                    }
                    ClientEvent::Failed {
                        error,
                        unacknowledged,
                    } => {
                        out.failed_session = true;
                        out.client_end = format!("failed: {error}");
                        up.unacked_reported = Some(unacknowledged);
                    }
                }
            }
            while let Some(e) = server.poll_event() {
                progress = true;
                match e {
                    ServerEvent::SessionCreated { session, .. } => {
                        server.accept(session);
                        if server_session.is_none() {
                            server_session = Some(session);
                        }
                    }
                    ServerEvent::Delivery {
                        session,
                        number,
                        payload,
                        reply,
                        ..
                    } => {
                        up.deliver(number);
                        server.delivered(session, number);
                        if let Some(token) = reply {
                            let d = cfg.reply_delay_max.as_micros() as u64;
                            let at = now + Duration::from_micros(w.rng.random_range(0..=d));
                            let body = Bytes::from([b"reply:".as_slice(), &payload].concat());
                            w.push(at, Ev::Reply(token, body));
                        }
                        if cfg.pattern == Pattern::Duplex
                            && server.send(now, session, action.clone(), payload).is_ok()
                        {
                            server_sent += 1;
                        }
                    }
                    ServerEvent::Acknowledged { number, .. } => down.acked.push(number),
                    ServerEvent::SessionClosed { session } => {
                        if Some(session) == server_session {
                            out.server_end = "closed".into();
                            server_done = true;
                            down.closed_ok = true;
                        }
                    }
                    ServerEvent::SessionFailed {
                        session,
                        unacknowledged,
                        error,
                    } => {
                        if Some(session) == server_session {
                            out.server_end = format!("failed: {error}");
                            server_done = true;
                            if cfg.pattern == Pattern::Duplex && !up.closed_ok {
                                out.failed_session = true;
                                down.unacked_reported = Some(unacknowledged);
                            }
                        }
                    }
                }
            }
            // Duplex: the service closes its sequence once it echoed everything; the client
            // closes once it received everything (or the service closed).
            if cfg.pattern != Pattern::Duplex
                && client.state() == ClientState::Open
                && up.acked.len() as u64 >= total
            {
                let _ = client.close(now);
            }
            if cfg.pattern == Pattern::Duplex {
                if let Some(s) = server_session {
                    if !server_closing && !server_done && server_sent == total {
                        server_closing = true;
                        let _ = server.close_session(now, s, close_timeout);
                    }
                }
                if client.state() == ClientState::Open
                    && down.delivered.len() as u64 == total
                    && up.acked.len() as u64 >= total
                {
                    let _ = client.close(now);
                }
            }
            if !progress {
                break;
            }
        }
        if steps > max_steps {
            out.problems.push(format!(
                "step limit reached (client {:?}, next client timeout {:?}, server {:?}, queue {})",
                client.state(),
                client
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(now)),
                server
                    .poll_timeout()
                    .map(|t| t.saturating_duration_since(now)),
                w.q.len()
            ));
            break;
        }
        steps += 1;
        let client_finished = matches!(client.state(), ClientState::Closed | ClientState::Failed);
        let finished =
            client_finished && (cfg.pattern != Pattern::Duplex || server_done || up.closed_ok);
        if finished {
            break;
        }
        if client_finished && cfg.pattern == Pattern::Duplex && w.q.is_empty() {
            // The client is gone; end the service session so it reports what it had left.
            if let Some(s) = server_session {
                server.abort_session(now, s);
                continue;
            }
            break;
        }
        let next = [
            w.q.peek().map(|q| q.at),
            client.poll_timeout(),
            server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            out.problems.push("stalled: nothing left to do".into());
            break;
        };
        if next > limit {
            out.problems.push("virtual time limit reached".into());
            break;
        }
        now = now.max(next);
        while w.q.peek().is_some_and(|q| q.at <= now) {
            let Some(q) = w.q.pop() else { break };
            if let Ev::ToServer(m, _) | Ev::ToClient(m) = &q.ev {
                tracing::trace!(
                    at = ?now.saturating_duration_since(base),
                    action = ?m.action,
                    seq = ?m.sequence.as_ref().map(|s| s.number),
                    ack = ?m.ack.as_ref().map(|a| &a.ranges),
                    "sim delivers"
                );
            }
            match q.ev {
                Ev::ToServer(m, ex) => server.handle_message(now, m, ex),
                Ev::ToClient(m) => client.handle_message(now, m),
                Ev::Reply(token, body) => {
                    let _ = server.reply(now, token, action.clone(), body);
                }
            }
        }
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
    }
    if cfg.pattern == Pattern::RequestReply {
        // A request is "acknowledged" when its reply arrived; the service must have executed
        // each request at most once, and every replied request exactly once.
        let executed = Ledger {
            delivered: up.delivered.clone(),
            order: up.order.clone(),
            acked: up.acked.clone(),
            unacked_reported: up.unacked_reported.clone(),
            closed_ok: up.closed_ok,
        };
        check("request", &executed, total, ordered, &mut out);
        let replies = Ledger {
            delivered: down.delivered.clone(),
            order: Vec::new(),
            acked: up.acked.clone(),
            unacked_reported: up.unacked_reported.clone(),
            closed_ok: up.closed_ok,
        };
        check("reply", &replies, total, false, &mut out);
    } else {
        check("message", &up, total, ordered, &mut out);
        if cfg.pattern == Pattern::Duplex {
            let t = server_sent;
            if down.unacked_reported.is_none() && !down.closed_ok && !up.closed_ok {
                // Client failed first; the service session reported through abort.
            }
            let mut d = down;
            if up.closed_ok {
                d.closed_ok = true;
            }
            check("echo", &d, t, ordered, &mut out);
        }
    }
    out.retransmitted = client.stats().retransmitted;
    out.virtual_time = now.saturating_duration_since(base);
    out
}

/// Aggregate of many runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Runs.
    pub runs: u64,
    /// Runs where every message was delivered exactly once (or reported).
    pub delivered_exactly_once: u64,
    /// Runs without disorder.
    pub in_order: u64,
    /// Messages lost.
    pub lost: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    /// Runs with a failed session.
    pub failed_sessions: u64,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, o: &RunOutcome) {
        self.runs += 1;
        if o.lost == 0 && o.duplicated == 0 {
            self.delivered_exactly_once += 1;
        }
        if o.out_of_order == 0 {
            self.in_order += 1;
        }
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        if o.failed_session {
            self.failed_sessions += 1;
        }
    }

    /// The final line of `wsrm simulate`.
    pub fn line(&self) -> String {
        format!(
            "runs={} delivered_exactly_once={} in_order={} lost={} duplicated={} failed_sessions={}",
            self.runs,
            self.delivered_exactly_once,
            self.in_order,
            self.lost,
            self.duplicated,
            self.failed_sessions
        )
    }
}
