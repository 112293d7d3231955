//! Callgrind driver for the engine's share of the runtime's hottest path: one-way reliable
//! messages over HTTP request-reply (WS-RM 1.0, window 64, 1 KiB payloads), every HTTP
//! response a standalone SequenceAcknowledgement. A `ClientSession` and an `Endpoint` are
//! wired back to back in virtual time and called the way `crates/wsrm` drives them:
//!
//! * client (`wsrm::client` driver): `send` per message (the application keeps a window's
//!   worth of sends outstanding), then per driver turn `handle_timeout`, `poll_transmit` until
//!   empty, `stats`, `poll_event` until empty, `poll_timeout`; each HTTP answer goes to
//!   `handle_message`;
//! * service (`wsrm::service` driver): per exchange `handle_message`, then `poll_event`
//!   (`Delivery` → `delivered` + `stats`) and `poll_transmit` until neither yields, then
//!   `poll_timeout`.
//!
//! Each side's work sits in its own `#[inline(never)]` function (`client_send`,
//! `client_turn`, `client_response`, `server_exchange`), and every engine call goes through an
//! `#[inline(never)]` wrapper named after it (`c_*` client, `s_*` service) that counts the call
//! after making it, so no tail call hides a callee from callgrind's inclusive counts:
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-proto cargo build --release -p wsrm-proto --example http_oneway_cg
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     /work/target-proto/release/examples/http_oneway_cg 20000
//! callgrind_annotate --threshold=100 --inclusive=yes cg.out | grep http_oneway_cg::
//! ```
//!
//! Divide by the message count (first argument, default 20,000).
//!
//! Arguments: `[count] [inorder|shuffle] [window] [connections]` (defaults 20,000, `inorder`,
//! 64, 64).
//!
//! * `inorder`: the HTTP requests reach the service in the order they were sent and each
//!   answer comes back before the next request is handled (one exchange at a time).
//! * `shuffle`: what concurrent HTTP exchanges produce (the runtime runs a window's worth,
//!   64, on separate connections): the requests queue in order for `connections` exchange
//!   slots, and each step a seeded xorshift picks one exchange in progress to advance — its
//!   request reaches the service, or its answer the client. So the service sees messages out
//!   of order (held behind gaps) and the client sees acknowledgements out of order (selective
//!   and stale ones). The client's driver turn runs after each answer, as in `inorder`.
//!   Deterministic.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wsrm_proto::msg::Message;
use wsrm_proto::{
    ClientConfig, ClientEvent, ClientSession, Endpoint, EndpointConfig, ExchangeId, Pattern,
    ServerEvent, ServerTransmit, SessionId, SessionStats, Shape,
};

static CALLS: AtomicU64 = AtomicU64::new(0);

macro_rules! wrap {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block)*) => {
        $(
            #[inline(never)]
            fn $name($($arg: $ty),*) -> $ret {
                let r = $body;
                // Work after the call: no tail call (callgrind would charge the callee to
                // the wrapper's caller).
                CALLS.fetch_add(1, Ordering::Relaxed);
                r
            }
        )*
    };
}

wrap! {
    fn c_send(c: &mut ClientSession, now: Instant, a: Arc<str>, p: Bytes) -> u64 {
        c.send(now, a, p).expect("send")
    }
    fn c_handle_timeout(c: &mut ClientSession, now: Instant) -> () { c.handle_timeout(now) }
    fn c_poll_transmit(c: &mut ClientSession, now: Instant) -> Option<Message> {
        c.poll_transmit(now)
    }
    fn c_stats(c: &ClientSession) -> SessionStats { c.stats() }
    fn c_poll_event(c: &mut ClientSession) -> Option<ClientEvent> { c.poll_event() }
    fn c_poll_timeout(c: &ClientSession) -> Option<Instant> { c.poll_timeout() }
    fn c_handle_message(c: &mut ClientSession, now: Instant, m: Message) -> () {
        c.handle_message(now, m)
    }
    fn s_handle_message(ep: &mut Endpoint, now: Instant, m: Message, ex: ExchangeId) -> () {
        ep.handle_message(now, m, Some(ex))
    }
    fn s_poll_event(ep: &mut Endpoint) -> Option<ServerEvent> { ep.poll_event() }
    fn s_delivered(ep: &mut Endpoint, session: SessionId, number: u64) -> bool {
        ep.delivered(session, number)
    }
    fn s_stats(ep: &Endpoint, session: SessionId) -> Option<SessionStats> { ep.stats(session) }
    fn s_poll_transmit(ep: &mut Endpoint, now: Instant) -> Option<ServerTransmit> {
        ep.poll_transmit(now)
    }
    fn s_poll_timeout(ep: &Endpoint) -> Option<Instant> { ep.poll_timeout() }
}

struct Service {
    ep: Endpoint,
    next_exchange: u64,
    delivered: u64,
}

/// One HTTP exchange at the service: the request through the engine, events handled, the
/// answer returned (the runtime's inline exchange and `pump`).
#[inline(never)]
fn server_exchange(svc: &mut Service, now: Instant, m: Message) -> Option<Message> {
    svc.next_exchange += 1;
    let ex = ExchangeId(svc.next_exchange);
    s_handle_message(&mut svc.ep, now, m, ex);
    let mut answer = None;
    loop {
        let mut progressed = false;
        while let Some(ev) = s_poll_event(&mut svc.ep) {
            progressed = true;
            match ev {
                ServerEvent::SessionCreated { session, .. } => {
                    svc.ep.accept(session);
                }
                ServerEvent::Delivery {
                    session,
                    number,
                    payload,
                    ..
                } => {
                    black_box(payload);
                    svc.delivered += 1;
                    s_delivered(&mut svc.ep, session, number);
                    s_stats(&svc.ep, session);
                }
                _ => {}
            }
        }
        while let Some(t) = s_poll_transmit(&mut svc.ep, now) {
            progressed = true;
            if t.exchange == Some(ex) {
                answer = t.message;
            }
        }
        if !progressed {
            break;
        }
    }
    s_poll_timeout(&svc.ep);
    answer
}

struct App {
    client: ClientSession,
    action: Arc<str>,
    payload: Bytes,
    total: u64,
    queued: u64,
    acked: u64,
    /// Sends the application keeps outstanding (the window).
    outstanding: u64,
}

/// The application queues sends (a window's worth outstanding, as `http_bench` does).
#[inline(never)]
fn client_send(app: &mut App, now: Instant) {
    while app.queued < app.total && app.queued - app.acked < app.outstanding {
        c_send(
            &mut app.client,
            now,
            app.action.clone(),
            app.payload.clone(),
        );
        app.queued += 1;
    }
}

/// One client driver turn: timers, transmits (HTTP requests to start), stats, events,
/// next deadline.
#[inline(never)]
fn client_turn(app: &mut App, now: Instant, requests: &mut impl Extend<Message>) {
    c_handle_timeout(&mut app.client, now);
    while let Some(m) = c_poll_transmit(&mut app.client, now) {
        requests.extend(Some(m));
    }
    c_stats(&app.client);
    while let Some(ev) = c_poll_event(&mut app.client) {
        match ev {
            ClientEvent::Acknowledged { number } => {
                black_box(number);
                app.acked += 1;
            }
            ClientEvent::Failed { error, .. } => panic!("session failed: {error}"),
            _ => {}
        }
    }
    c_poll_timeout(&app.client);
}

/// An HTTP answer for the client.
#[inline(never)]
fn client_response(app: &mut App, now: Instant, m: Message) {
    c_handle_message(&mut app.client, now, m);
}

/// xorshift64*: a deterministic choice without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((r >> 32) as usize) % n
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let shuffle = match args.next().as_deref() {
        None | Some("inorder") => false,
        Some("shuffle") => true,
        Some(other) => panic!("mode {other:?}: inorder or shuffle"),
    };
    let window: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let connections: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let mut now = Instant::now();
    let mut cfg = ClientConfig::new(Pattern::OneWay, Shape::RequestReply);
    cfg.settings.max_transfer_window_size = window;
    cfg.remote_address = Some(Arc::from("http://127.0.0.1:8080/svc"));
    let client = ClientSession::new(now, cfg, 1).expect("client config");
    let mut ecfg = EndpointConfig::default();
    ecfg.settings.max_transfer_window_size = window;
    let mut svc = Service {
        ep: Endpoint::new(ecfg, 2).expect("endpoint config"),
        next_exchange: 0,
        delivered: 0,
    };
    let mut app = App {
        client,
        action: Arc::from("urn:bench/Notify"),
        payload: Bytes::from(vec![b'x'; 1024]),
        total,
        queued: 0,
        acked: 0,
        outstanding: u64::from(window),
    };
    let step = Duration::from_micros(15);
    if shuffle {
        run_shuffled(&mut app, &mut svc, now, step, connections);
    } else {
        // HTTP requests in flight, answered in order (one exchange per step of virtual time).
        let mut requests: VecDeque<Message> = VecDeque::new();
        loop {
            client_send(&mut app, now);
            client_turn(&mut app, now, &mut requests);
            if app.acked == total {
                break;
            }
            let Some(req) = requests.pop_front() else {
                panic!(
                    "stalled: nothing in flight ({} of {total} acknowledged)",
                    app.acked
                );
            };
            now += step;
            if let Some(answer) = server_exchange(&mut svc, now, req) {
                now += step;
                client_response(&mut app, now, answer);
            }
        }
    }
    assert_eq!(svc.delivered, total);
    let st = app.client.stats();
    assert_eq!(st.retransmitted, 0, "no retransmissions expected");
    println!(
        "{total} messages ({}, window {window}): sent {}, acknowledged {}, window {}, rtt {:?}",
        if shuffle {
            format!("shuffle over {connections} connections")
        } else {
            "inorder".to_owned()
        },
        st.sent,
        st.acknowledged,
        st.window_size,
        st.rtt
    );
}

/// An HTTP exchange on one of the concurrent connections.
enum Exchange {
    /// The request is on its way to the service.
    Request(Message),
    /// The service answered; the answer is on its way to the client.
    Answer(Message),
}

/// Concurrent exchanges: the client's requests queue for one of `connections` connections
/// (in order, as the runtime's exchange pool takes them); each step one exchange in progress,
/// chosen at random, advances (its request reaches the service, or its answer the client).
fn run_shuffled(
    app: &mut App,
    svc: &mut Service,
    mut now: Instant,
    step: Duration,
    connections: usize,
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut queued: VecDeque<Message> = VecDeque::new();
    let mut active: Vec<Exchange> = Vec::with_capacity(connections);
    loop {
        client_send(app, now);
        client_turn(app, now, &mut queued);
        if app.acked == app.total {
            break;
        }
        // Steps until one answer reached the client (then the client's driver turns).
        loop {
            while active.len() < connections {
                let Some(m) = queued.pop_front() else { break };
                active.push(Exchange::Request(m));
            }
            if active.is_empty() {
                panic!(
                    "stalled: nothing in flight ({} of {} acknowledged)",
                    app.acked, app.total
                );
            }
            now += step;
            let i = rng.below(active.len());
            match active.swap_remove(i) {
                Exchange::Request(req) => {
                    if let Some(answer) = server_exchange(svc, now, req) {
                        active.push(Exchange::Answer(answer));
                    }
                }
                Exchange::Answer(answer) => {
                    client_response(app, now, answer);
                    break;
                }
            }
        }
    }
}
