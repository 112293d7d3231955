//! A fault-injecting HTTP SOAP intermediary (`wsrm proxy`).
//!
//! The proxy accepts HTTP requests and forwards each whole exchange (request, then response) to
//! one upstream URL. Per exchange it may, independently:
//!
//! * **drop the request** — the service never sees it;
//! * **drop the response** — the service processed the request, the client never gets the answer;
//! * **duplicate** — the request is forwarded a second time after the first copy was answered
//!   (the second answer is discarded);
//! * **hold and reorder** — the request is held until 1–3 later exchanges have been forwarded (or
//!   [`ProxyConfig::reorder_hold`] has passed, so a client with one request in flight never
//!   waits forever), then forwarded;
//! * **delay** — the exchange is delayed by a uniform random time in `[min, max]`.
//!
//! All decisions come from one seeded random generator, drawn in arrival order (five draws per
//! exchange, always), so a seed and an arrival order determine every decision.
//!
//! A dropped request or response is answered at once with `502 Bad Gateway` and an empty body
//! ([`DropMode::BadGateway`], the default): the client's HTTP connection stays usable and an RM
//! client treats the exchange as lost, exactly like a lost message, and retransmits on its
//! timer. [`DropMode::Close`] instead closes the connection without a response. Neither makes a
//! client wait for a timeout.
//!
//! Paths map like a reverse proxy: a request for `/p?q` goes to the upstream URL's path joined
//! with `/p?q` (`--to http://host:9000` + `/svc` → `http://host:9000/svc`). The upstream must
//! be `http`.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderMap, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::Instrument;

use crate::http::{self as h, ConnInfo, Handled, HttpClient, ServerLimits};

/// How the proxy answers an exchange whose request or response it dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DropMode {
    /// `502 Bad Gateway`, empty body, connection kept open (fastest for clients).
    #[default]
    BadGateway,
    /// Close the connection without sending a response.
    Close,
}

/// What the proxy does.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Upstream base URL (`http` only).
    pub to: Uri,
    /// Probability of dropping a request, 0.0 ..= 1.0.
    pub drop_requests: f64,
    /// Probability of dropping a response, 0.0 ..= 1.0.
    pub drop_responses: f64,
    /// Probability of forwarding a request twice, 0.0 ..= 1.0.
    pub duplicate: f64,
    /// Probability of holding a request and forwarding it after later ones, 0.0 ..= 1.0.
    pub reorder: f64,
    /// Uniform random delay range applied to every exchange, if any.
    pub delay: Option<(Duration, Duration)>,
    /// Seed of the decision generator.
    pub seed: u64,
    /// How drops are signalled to the client.
    pub drop_mode: DropMode,
    /// Longest time a held request waits for later exchanges. Default 50 ms.
    pub reorder_hold: Duration,
    /// Largest request or response body forwarded. Default 64 MiB.
    pub max_body: usize,
    /// Upstream exchange timeout. Default 60 s.
    pub upstream_timeout: Duration,
}

/// A configuration or start-up error of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A probability outside 0..=1.
    #[error("{name} must be a probability between 0 and 1, got {value}")]
    Probability {
        /// Which option.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// `delay` with min > max.
    #[error("delay range {min:?}..{max:?} is empty (min > max)")]
    DelayRange {
        /// Lower bound.
        min: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// Upstream URL unusable.
    #[error("upstream URL {0} must be an absolute http:// URL")]
    Upstream(String),
    /// Could not bind the listening socket.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ProxyConfig {
    /// A transparent proxy to `to` (no faults), seed 0.
    pub fn new(to: Uri) -> Self {
        ProxyConfig {
            to,
            drop_requests: 0.0,
            drop_responses: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: None,
            seed: 0,
            drop_mode: DropMode::BadGateway,
            reorder_hold: Duration::from_millis(50),
            max_body: 64 * 1024 * 1024,
            upstream_timeout: Duration::from_secs(60),
        }
    }

    /// A transparent proxy to the URL given as text.
    pub fn from_url(to: &str) -> Result<Self, ProxyError> {
        let uri = to
            .parse::<Uri>()
            .map_err(|_| ProxyError::Upstream(to.to_string()))?;
        let c = ProxyConfig::new(uri);
        c.validate()?;
        Ok(c)
    }

    /// The decisions the proxy will make for the first `n` exchanges, in arrival order
    /// (deterministic for [`ProxyConfig::seed`]).
    pub fn plan(&self, n: usize) -> Vec<ExchangePlan> {
        let mut d = Decider {
            rng: rand::rngs::StdRng::seed_from_u64(self.seed),
            next: 0,
        };
        (0..n).map(|_| d.decide(self)).collect()
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), ProxyError> {
        for (name, value) in [
            ("drop", self.drop_requests),
            ("drop-responses", self.drop_responses),
            ("dup", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ProxyError::Probability { name, value });
            }
        }
        if let Some((min, max)) = self.delay {
            if min > max {
                return Err(ProxyError::DelayRange { min, max });
            }
        }
        if self.to.scheme_str() != Some("http") || self.to.authority().is_none() {
            return Err(ProxyError::Upstream(self.to.to_string()));
        }
        Ok(())
    }
}

/// What the proxy did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Exchanges received from clients.
    pub exchanges: u64,
    /// Requests forwarded upstream (including duplicates).
    pub forwarded: u64,
    /// Requests dropped before reaching the service.
    pub dropped_requests: u64,
    /// Responses dropped after the service answered.
    pub dropped_responses: u64,
    /// Requests forwarded twice.
    pub duplicated: u64,
    /// Requests held and forwarded after later ones.
    pub reordered: u64,
    /// Exchanges delayed.
    pub delayed: u64,
    /// Exchanges that failed upstream (connection errors, timeouts; answered 502).
    pub upstream_errors: u64,
}

impl fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exchanges {}, forwarded {}, dropped requests {}, dropped responses {}, duplicated {}, reordered {}, delayed {}, upstream errors {}",
            self.exchanges,
            self.forwarded,
            self.dropped_requests,
            self.dropped_responses,
            self.duplicated,
            self.reordered,
            self.delayed,
            self.upstream_errors
        )
    }
}

#[derive(Default)]
struct Counters {
    exchanges: AtomicU64,
    forwarded: AtomicU64,
    dropped_requests: AtomicU64,
    dropped_responses: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    delayed: AtomicU64,
    upstream_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ProxyStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            exchanges: g(&self.exchanges),
            forwarded: g(&self.forwarded),
            dropped_requests: g(&self.dropped_requests),
            dropped_responses: g(&self.dropped_responses),
            duplicated: g(&self.duplicated),
            reordered: g(&self.reordered),
            delayed: g(&self.delayed),
            upstream_errors: g(&self.upstream_errors),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// The decisions the proxy makes for one exchange (see [`ProxyConfig::plan`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExchangePlan {
    /// Arrival index, from 0.
    pub index: u64,
    /// The request is dropped.
    pub drop_request: bool,
    /// The response is dropped (ignored when the request is dropped).
    pub drop_response: bool,
    /// The request is forwarded twice.
    pub duplicate: bool,
    /// The request is held until this many later exchanges were forwarded.
    pub hold_for: Option<u32>,
    /// The exchange is delayed by this long.
    pub delay: Option<Duration>,
}

type Decision = ExchangePlan;

struct Decider {
    rng: rand::rngs::StdRng,
    next: u64,
}

impl Decider {
    fn decide(&mut self, cfg: &ProxyConfig) -> Decision {
        // Always five draws per exchange, so later decisions do not depend on earlier outcomes.
        let a: f64 = self.rng.random();
        let b: f64 = self.rng.random();
        let c: f64 = self.rng.random();
        let d: f64 = self.rng.random();
        let e: f64 = self.rng.random();
        let index = self.next;
        self.next += 1;
        let hold_for = if d < cfg.reorder {
            // 1..=3 later exchanges, from the fractional position inside the hit interval.
            let frac = if cfg.reorder > 0.0 {
                d / cfg.reorder
            } else {
                0.0
            };
            Some(1 + (frac * 3.0).min(2.0) as u32)
        } else {
            None
        };
        let delay = cfg.delay.map(|(min, max)| {
            let span = max.saturating_sub(min).as_secs_f64();
            min + Duration::from_secs_f64(span * e)
        });
        Decision {
            index,
            drop_request: a < cfg.drop_requests,
            drop_response: b < cfg.drop_responses,
            duplicate: c < cfg.duplicate,
            hold_for,
            delay: delay.filter(|d| !d.is_zero()),
        }
    }
}

struct Held {
    remaining: u32,
    release: Option<oneshot::Sender<()>>,
}

struct Shared {
    cfg: ProxyConfig,
    decider: Mutex<Decider>,
    held: Mutex<Vec<Held>>,
    counters: Counters,
    client: HttpClient,
}

impl Shared {
    /// Counts one more forwarded exchange against every held request; releases those due.
    fn note_forwarded(&self) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        for h in held.iter_mut() {
            h.remaining = h.remaining.saturating_sub(1);
            if h.remaining == 0 {
                if let Some(tx) = h.release.take() {
                    let _ = tx.send(());
                }
            }
        }
        held.retain(|h| h.release.is_some());
    }

    fn hold(&self, n: u32) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut held) = self.held.lock() {
            held.push(Held {
                remaining: n,
                release: Some(tx),
            });
        }
        rx
    }
}

/// The fault-injecting intermediary. Start it with [`Proxy::spawn`].
#[derive(Debug)]
pub struct Proxy;

/// A running proxy: its address and counters. Dropping the handle stops the proxy.
pub struct ProxyHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("addr", &self.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ProxyHandle {
    /// The listening address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` + `path` — the URL clients use instead of the service's.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        self.shared.counters.snapshot()
    }

    /// Stops accepting, ends open connections and waits for the accept loop to finish.
    pub async fn shutdown(mut self) -> ProxyStats {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.stats()
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl Proxy {
    /// Binds `listen` (port 0 = ephemeral) and starts forwarding to `config.to`.
    pub async fn spawn(listen: SocketAddr, config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
        config.validate()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ProxyError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
            addr: listen,
            source,
        })?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ProxyError::Upstream(e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let shared = Arc::new(Shared {
            decider: Mutex::new(Decider {
                rng: rand::rngs::StdRng::seed_from_u64(config.seed),
                next: 0,
            }),
            held: Mutex::new(Vec::new()),
            counters: Counters::default(),
            client: HttpClient::new(tls, 1024),
            cfg: config,
        });
        let (tx, rx) = watch::channel(false);
        let limits = ServerLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(30),
        };
        let sh = shared.clone();
        let task = tokio::spawn(
            async move {
                h::serve(
                    listener,
                    None,
                    limits,
                    move |req, info| exchange(sh.clone(), req, info),
                    rx,
                )
                .await;
            }
            .instrument(tracing::info_span!("proxy", %addr)),
        );
        tracing::info!(%addr, to = %shared.cfg.to, "proxy listening");
        Ok(ProxyHandle {
            addr,
            shared,
            shutdown: tx,
            task: Some(task),
        })
    }
}

const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if HOP_BY_HOP.contains(k) || k == header::HOST || k.as_str() == "keep-alive" {
            continue;
        }
        to.append(k.clone(), v.clone());
    }
}

fn upstream_uri(base: &Uri, incoming: &Uri) -> Option<Uri> {
    let base_path = base.path().trim_end_matches('/');
    let pq = incoming.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let joined = if pq.starts_with('/') {
        format!("{base_path}{pq}")
    } else {
        format!("{base_path}/{pq}")
    };
    Uri::builder()
        .scheme(base.scheme_str().unwrap_or("http"))
        .authority(base.authority()?.as_str())
        .path_and_query(joined)
        .build()
        .ok()
}

fn dropped(mode: DropMode) -> Handled {
    match mode {
        DropMode::BadGateway => Handled::Respond(h::empty(StatusCode::BAD_GATEWAY)),
        DropMode::Close => Handled::Close,
    }
}

async fn exchange(shared: Arc<Shared>, req: Request<Incoming>, _info: Arc<ConnInfo>) -> Handled {
    let (parts, body) = req.into_parts();
    let body = match h::read_body(body, shared.cfg.max_body, Duration::from_secs(60)).await {
        Ok(b) => b,
        Err(h::ReadError::TooLarge) => {
            return Handled::Respond(h::empty(StatusCode::PAYLOAD_TOO_LARGE));
        }
        Err(_) => return Handled::Close,
    };
    let decision = match shared.decider.lock() {
        Ok(mut d) => d.decide(&shared.cfg),
        Err(_) => return Handled::Close,
    };
    bump(&shared.counters.exchanges);
    let span = tracing::debug_span!("exchange", n = decision.index);
    async move {
        tracing::debug!(?decision, "exchange arrived");
        if let Some(d) = decision.delay {
            bump(&shared.counters.delayed);
            tokio::time::sleep(d).await;
        }
        if decision.drop_request {
            bump(&shared.counters.dropped_requests);
            tracing::debug!("request dropped");
            return dropped(shared.cfg.drop_mode);
        }
        if let Some(n) = decision.hold_for {
            bump(&shared.counters.reordered);
            let rx = shared.hold(n);
            let _ = tokio::time::timeout(shared.cfg.reorder_hold, rx).await;
        }
        let Some(uri) = upstream_uri(&shared.cfg.to, &parts.uri) else {
            bump(&shared.counters.upstream_errors);
            return Handled::Respond(h::empty(StatusCode::BAD_GATEWAY));
        };
        let build = |uri: Uri| {
            let mut r = Request::new(Full::new(h::Envelope::from(body.clone())));
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = uri;
            copy_headers(&parts.headers, r.headers_mut());
            r
        };
        bump(&shared.counters.forwarded);
        let result = shared
            .client
            .forward(
                build(uri.clone()),
                shared.cfg.max_body,
                shared.cfg.upstream_timeout,
            )
            .await;
        shared.note_forwarded();
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                bump(&shared.counters.upstream_errors);
                tracing::debug!(error = %e, "upstream failed");
                return Handled::Respond(h::empty(StatusCode::BAD_GATEWAY));
            }
        };
        if decision.duplicate {
            bump(&shared.counters.duplicated);
            bump(&shared.counters.forwarded);
            let sh = shared.clone();
            let dup = build(uri);
            tokio::spawn(async move {
                let _ = sh
                    .client
                    .forward(dup, sh.cfg.max_body, sh.cfg.upstream_timeout)
                    .await;
                sh.note_forwarded();
            });
        }
        if decision.drop_response {
            bump(&shared.counters.dropped_responses);
            tracing::debug!("response dropped");
            return dropped(shared.cfg.drop_mode);
        }
        let (rp, rb) = resp.into_parts();
        let mut out = http::Response::new(rb);
        *out.status_mut() = rp.status;
        copy_headers(&rp.headers, out.headers_mut());
        Handled::Respond(out)
    }
    .instrument(span)
    .await
}

/// Parses a delay range `MIN..MAX` with units `ms` or `s` (e.g. `0..5ms`, `10ms..20ms`, `1s..2s`);
/// a bare number is milliseconds. A single value means a fixed delay.
pub fn parse_delay(s: &str) -> Result<(Duration, Duration), String> {
    fn one(t: &str, unit_hint: Option<&str>) -> Result<Duration, String> {
        let t = t.trim();
        let (num, unit) = if let Some(n) = t.strip_suffix("ms") {
            (n, "ms")
        } else if let Some(n) = t.strip_suffix('s') {
            (n, "s")
        } else {
            (t, unit_hint.unwrap_or("ms"))
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("bad duration {t:?} (use e.g. 5ms, 1.5s)"))?;
        if !v.is_finite() || v < 0.0 {
            return Err(format!("bad duration {t:?}"));
        }
        Ok(match unit {
            "s" => Duration::from_secs_f64(v),
            _ => Duration::from_secs_f64(v / 1000.0),
        })
    }
    fn unit_of(t: &str) -> Option<&'static str> {
        let t = t.trim();
        if t.ends_with("ms") {
            Some("ms")
        } else if t.ends_with('s') {
            Some("s")
        } else {
            None
        }
    }
    match s.split_once("..") {
        Some((a, b)) => {
            let hint = unit_of(b);
            let min = one(a, hint)?;
            let max = one(b, None)?;
            if min > max {
                return Err(format!("empty delay range {s:?} (min > max)"));
            }
            Ok((min, max))
        }
        None => {
            let d = one(s, None)?;
            Ok((d, d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProxyConfig {
        let mut c = ProxyConfig::new(Uri::from_static("http://127.0.0.1:1/svc"));
        c.drop_requests = 0.2;
        c.drop_responses = 0.1;
        c.duplicate = 0.1;
        c.reorder = 0.1;
        c.delay = Some((Duration::from_millis(1), Duration::from_millis(3)));
        c.seed = 42;
        c
    }

    #[test]
    fn decisions_are_deterministic_for_a_seed() {
        let c = cfg();
        let run = |seed| ProxyConfig { seed, ..c.clone() }.plan(500);
        let a = run(42);
        assert_eq!(a, run(42));
        assert_ne!(a, run(43));
        let drops = a.iter().filter(|d| d.drop_request).count();
        // 20 % of 500 with generous binomial bounds (mean 100, sd ≈ 9).
        assert!((60..=140).contains(&drops), "drops {drops}");
        assert!(a
            .iter()
            .all(|d| d.hold_for.is_none_or(|n| (1..=3).contains(&n))));
        assert!(a.iter().all(|d| d
            .delay
            .is_some_and(|x| x >= Duration::from_millis(1) && x <= Duration::from_millis(3))));
    }

    #[test]
    fn validation_names_the_bad_option() {
        let mut c = cfg();
        c.duplicate = 1.5;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "dup must be a probability between 0 and 1, got 1.5"
        );
        let mut c = cfg();
        c.to = Uri::from_static("https://x/");
        assert!(matches!(c.validate(), Err(ProxyError::Upstream(_))));
    }

    #[test]
    fn delay_ranges_parse() {
        assert_eq!(
            parse_delay("0..5ms"),
            Ok((Duration::ZERO, Duration::from_millis(5)))
        );
        assert_eq!(
            parse_delay("10ms..1s"),
            Ok((Duration::from_millis(10), Duration::from_secs(1)))
        );
        assert_eq!(
            parse_delay("7"),
            Ok((Duration::from_millis(7), Duration::from_millis(7)))
        );
        assert!(parse_delay("5ms..1ms").is_err());
        assert!(parse_delay("x..1ms").is_err());
    }

    #[test]
    fn upstream_paths_join() {
        let base = Uri::from_static("http://127.0.0.1:9/app/");
        assert_eq!(
            upstream_uri(&base, &Uri::from_static("/svc?a=1")).map(|u| u.to_string()),
            Some("http://127.0.0.1:9/app/svc?a=1".to_string())
        );
        let base = Uri::from_static("http://127.0.0.1:9");
        assert_eq!(
            upstream_uri(&base, &Uri::from_static("/")).map(|u| u.to_string()),
            Some("http://127.0.0.1:9/".to_string())
        );
    }
}
