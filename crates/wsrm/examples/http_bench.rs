//! Loopback HTTP benchmark of the runtime (recorded in BENCHMARKS.md, section "wsrm runtime").
//!
//! `cargo run --release -p wsrm --example http_bench [-- MESSAGES]`
//!
//! 1. ceiling: plain SOAP 1.2 one-way POSTs without RM (1 KiB bodies) on the same hyper stack,
//!    answered 202, at each reliable run's number of requests in flight: 64 concurrent
//!    requests (the 1-session run: window 64) and 512 (the 64-session run: 64 sessions of
//!    window 8, each message its own HTTP exchange); each also with wsrm's transport settings;
//! 2. reliable one-way throughput and send→ack latency (p50/p99), 1 KiB bodies, 1 session
//!    (window 64, 64 outstanding sends) and 64 concurrent sessions (default window 8), by a
//!    service without a handler (it acknowledges and drops, as the ceiling's server drops) and
//!    by one whose application handler discards each message (a hand-off to the session's
//!    handler task per message);
//! 3. resident memory of a service process (with an application handler) holding 10,000 open
//!    idle sessions.
//!
//! Each phase runs in a process of its own (this program started with `--phase NAME N`), so no
//! phase inherits another's connections, sockets in TIME_WAIT or allocator state;
//! `HTTP_BENCH_PHASES=a,b` selects phases; `--phase NAME N` runs one in this process (for
//! profilers that do not follow child processes) and prints its raw `RESULT` line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use wsrm::{Binding, Client, ClientOptions, Service};
use wsrm_proto::msg::{Action, Body, CreateSequence, Message, RmVersion, SequenceHeader};

// The same allocator as the `wsrm` binary; the ceiling and the reliable runs share it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn body_1k() -> String {
    let filler = "x".repeat(1024 - 40);
    format!("<p xmlns=\"urn:wsrm:payload\">{filler}</p>")
}

/// CPU time (user + system) this process used so far, from /proc/self/stat (Linux; 0 elsewhere).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// CPU microseconds per message spent since `since` (client and service, both in this process).
fn cpu_per_msg(since: Duration, n: usize) -> f64 {
    (cpu_time() - since).as_secs_f64() * 1e6 / n as f64
}

/// The ceilings' one-way envelope (SOAP 1.2 + WS-Addressing 1.0, no RM headers, 1 KiB body).
fn plain_envelope(addr: std::net::SocketAddr) -> Bytes {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::Other(Arc::from("urn:bench/OneWay")),
        Body::Application(Bytes::from(body_1k())),
    );
    m.to = Some(Arc::from(format!("http://{addr}/svc").as_str()));
    wsrm_wire::encode(&m, &wsrm_wire::Framing::soap12_wsa10()).unwrap()
}

/// A SOAP 1.2 POST of `env` to `url` (parsed per request, as a plain client does).
fn soap_post<U>(url: U, env: Bytes) -> http::Request<Full<Bytes>>
where
    http::Uri: TryFrom<U>,
    <http::Uri as TryFrom<U>>::Error: Into<http::Error>,
{
    http::Request::post(url)
        .header("content-type", "application/soap+xml; charset=utf-8")
        .body(Full::new(env))
        .unwrap()
}

/// A CreateSequence (RM 1.0, SOAP 1.2, WS-Addressing 1.0) to `url` with `message_id`.
fn create_sequence(url: &str, message_id: &str) -> Bytes {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::CreateSequence,
        Body::CreateSequence(Box::new(CreateSequence {
            acks_to: String::new(),
            expires: None,
            offer: None,
        })),
    );
    m.message_id = Some(Arc::from(message_id));
    m.to = Some(Arc::from(url));
    wsrm_wire::encode(&m, &wsrm_wire::Framing::soap12_wsa10()).unwrap()
}

/// A standalone acknowledgement of `1..64` with BufferRemaining, as wsrm's service answers a
/// one-way sequence message over HTTP (SOAP 1.2, WS-Addressing 1.0, RM 1.0).
fn standalone_ack() -> Bytes {
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::SequenceAcknowledgement,
        Body::Empty,
    );
    m.ack = Some(wsrm_proto::msg::AckHeader {
        identifier: wsrm_proto::msg::SequenceId::from(
            "urn:uuid:6c9a3f3e-0b7e-4c55-9d1f-2f8d6c1a9b21",
        ),
        ranges: vec![(1, 64)],
        buffer_remaining: Some(8),
        ..Default::default()
    });
    wsrm_wire::encode(&m, &wsrm_wire::Framing::soap12_wsa10()).unwrap()
}

/// Reads a whole body as the runtime does: frames until the body says it is complete (all of
/// its Content-Length received), without a last poll for its end; `collect()` makes that poll,
/// which can wait for the connection task. Both ceilings read bodies this way, as the reliable
/// path does, so that the comparison is about RM alone.
async fn read_all<B>(body: B) -> Result<Bytes, B::Error>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut out = bytes::BytesMut::new();
    while !body.is_end_stream() {
        let Some(frame) = body.as_mut().frame().await else {
            break;
        };
        if let Ok(data) = frame?.into_data() {
            if out.is_empty() && body.is_end_stream() {
                return Ok(data);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

/// Throughput, CPU µs per message, and request→response latency p50/p99.
type Ceiling = (f64, f64, Duration, Duration);

/// `answer`: the response body (200 with a SOAP content type) instead of an empty 202 — the
/// diagnostic `ceiling_ack` answers every POST with a standalone acknowledgement envelope, as
/// WS-RM over HTTP requires, to measure what that answer costs by itself.
async fn ceiling(n: usize, conc: usize, answer: Option<Bytes>) -> Ceiling {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let answer = answer.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let answer = answer.clone();
                        async move {
                            let b = read_all(req.into_body()).await?;
                            // Same work as the reliable path's codec step: parse the envelope.
                            let _ = wsrm_wire::decode(b, &wsrm_wire::Limits::default());
                            let Some(body) = answer else {
                                let mut r = http::Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = http::StatusCode::ACCEPTED;
                                return Ok::<_, hyper::Error>(r);
                            };
                            let mut r = http::Response::new(Full::new(body));
                            r.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static(
                                    "application/soap+xml; charset=utf-8",
                                ),
                            );
                            Ok(r)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let env = plain_envelope(addr);
    let url = format!("http://{addr}/svc");
    let cpu = cpu_time();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..conc {
        let (client, env, url) = (client.clone(), env.clone(), url.clone());
        set.spawn(async move {
            // Latency recorded as the reliable runs record theirs (same clock readings).
            let mut lat = Vec::with_capacity(n / conc + 1);
            let mut i = w;
            while i < n {
                let t = Instant::now();
                let req = soap_post(&url, env.clone());
                let r = client.request(req).await.unwrap();
                let _ = read_all(r.into_body()).await;
                lat.push(t.elapsed());
                i += conc;
            }
            lat
        });
    }
    finish(set, start, cpu, n).await
}

/// What the same-settings ceiling's sweep watches of a connection (as src/http.rs `Activity`).
#[derive(Default)]
struct ConnWatch {
    heads: std::sync::atomic::AtomicU64,
    stop: std::sync::atomic::AtomicBool,
    waker: std::sync::Mutex<Option<std::task::Waker>>,
}

/// Collects the ceiling tasks' latencies; throughput and CPU are taken before sorting them.
async fn finish(
    mut set: tokio::task::JoinSet<Vec<Duration>>,
    start: Instant,
    cpu: Duration,
    n: usize,
) -> Ceiling {
    let mut lat = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        lat.extend(r.unwrap());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let cpu = cpu_per_msg(cpu, n);
    (rate, cpu, pct(&mut lat, 0.5), pct(&mut lat, 0.99))
}

/// The ceiling with wsrm's own transport settings (the binding's defaults): the server
/// has a head-read watchdog, a body size limit and a body read timeout and accepts under a
/// connection limit; the client sends on hyper's low-level connections as `Client` does and
/// bounds each exchange by SendTimeout and the response size. Everything a reliable message
/// pays on the HTTP side, without RM.
async fn ceiling_same_settings(n: usize, conc: usize) -> Ceiling {
    let t = Binding::ws_http().transport;
    let max = usize::try_from(t.max_received_message_size).unwrap_or(usize::MAX);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (header_timeout, body_timeout) = (t.request_header_timeout, t.request_body_timeout);
    let permits = Arc::new(tokio::sync::Semaphore::new(t.max_connections));
    // The head-read timeout as wsrm's server keeps it (src/http.rs, `sweep`): a counter per
    // request, one task looking at every connection four times per timeout, and a stop
    // signal per connection (a flag and the connection task's waker).
    type Watched = (Arc<ConnWatch>, u64, u32);
    let open: Arc<std::sync::Mutex<std::collections::HashMap<u64, Watched>>> = Arc::default();
    let swept = open.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(header_timeout / 4);
        loop {
            tick.tick().await;
            let mut o = swept.lock().unwrap();
            let idle: Vec<_> = o
                .extract_if(|_, (w, last, idle)| {
                    let h = w.heads.load(std::sync::atomic::Ordering::Relaxed);
                    *idle = if h == *last { *idle + 1 } else { 0 };
                    *last = h;
                    *idle >= 5
                })
                .collect();
            drop(o);
            for (_, (w, _, _)) in idle {
                w.stop.store(true, std::sync::atomic::Ordering::Release);
                if let Some(waker) = w.waker.lock().unwrap().clone() {
                    waker.wake();
                }
            }
        }
    });
    tokio::spawn(async move {
        let mut next = 0u64;
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let watch = Arc::new(ConnWatch::default());
            watch.heads.store(1, std::sync::atomic::Ordering::Relaxed);
            next += 1;
            let id = next;
            open.lock().unwrap().insert(id, (watch.clone(), 0, 0));
            let open = open.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let waker =
                    std::future::poll_fn(|cx| std::task::Poll::Ready(cx.waker().clone())).await;
                *watch.waker.lock().unwrap() = Some(waker);
                let seen = watch.clone();
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.heads
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        async move {
                            // The body read timeout as wsrm's server keeps it: a timer only
                            // when the body is not in whole at the first look (src/http.rs).
                            let limited = http_body_util::Limited::new(req.into_body(), max);
                            let mut read = std::pin::pin!(read_all(limited));
                            let b = match futures_util::poll!(read.as_mut()) {
                                std::task::Poll::Ready(r) => r,
                                std::task::Poll::Pending => {
                                    tokio::time::timeout(body_timeout, read)
                                        .await
                                        .map_err(|e| e.to_string())?
                                }
                            }
                            .map_err(|e| e.to_string())?;
                            let _ = wsrm_wire::decode(b, &wsrm_wire::Limits::default());
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = http::StatusCode::ACCEPTED;
                            Ok::<_, String>(r)
                        }
                    });
                let mut builder = hyper::server::conn::http1::Builder::new();
                // as wsrm's server (src/http.rs): flattened writes
                builder
                    .header_read_timeout(None)
                    .keep_alive(true)
                    .writev(false);
                let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                let mut conn = std::pin::pin!(conn);
                std::future::poll_fn(|cx| {
                    if std::future::Future::poll(conn.as_mut(), cx).is_ready()
                        || watch.stop.load(std::sync::atomic::Ordering::Acquire)
                    {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await;
                open.lock().unwrap().remove(&id);
            });
        }
    });
    // The client as wsrm's `Client` sends (src/http/pool.rs): on hyper's low-level HTTP/1.1
    // connections, each driven by a task of its own, requests in origin form with a Host
    // header. Each of these tasks keeps one connection, where `Client` takes one from its pool
    // per exchange (two uncontended lock/unlock pairs and a clock reading more per message).
    let env = plain_envelope(addr);
    let host = http::HeaderValue::from_str(&addr.to_string()).unwrap();
    let cpu = cpu_time();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..conc {
        let (env, host) = (env.clone(), host.clone());
        let send_timeout = t.send_timeout;
        set.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::with_capacity(n / conc + 1);
            let mut i = w;
            while i < n {
                let t = Instant::now();
                let mut req = soap_post("/svc", env.clone());
                req.headers_mut().insert(http::header::HOST, host.clone());
                let exchange = async {
                    sender.ready().await.unwrap();
                    let r = sender.send_request(req).await.unwrap();
                    read_all(http_body_util::Limited::new(r.into_body(), max)).await
                };
                let _ = tokio::time::timeout(send_timeout, exchange).await;
                lat.push(t.elapsed());
                i += conc;
            }
            lat
        });
    }
    finish(set, start, cpu, n).await
}

/// An application handler that takes each message and does nothing with it.
struct Discard;

impl wsrm::SessionHandler for Discard {
    fn handle(&mut self, _d: wsrm::Delivery) -> wsrm::HandlerFuture<'_> {
        Box::pin(async { wsrm::Outcome::NoReply })
    }
}

/// `with_handler`: the service runs an application handler (one that discards each message)
/// on each session's handler task; without one, a service acknowledges and drops messages
/// without any handler task, as the ceiling's server drops them.
async fn reliable(
    sessions: usize,
    window: u32,
    n: usize,
    with_handler: bool,
) -> (f64, Duration, Duration, u64, f64) {
    let binding = Binding::ws_http().max_transfer_window_size(window);
    let mut builder = Service::builder(binding.clone());
    if with_handler {
        builder = builder.handler(|_: &wsrm::SessionInfo| Discard);
    }
    let svc = builder.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = svc.url("/svc");
    let mut clients = Vec::new();
    for _ in 0..sessions {
        clients.push(
            Client::open(&url, &binding, ClientOptions::default())
                .await
                .unwrap(),
        );
    }
    let per = n / sessions;
    let body = Bytes::from(body_1k());
    let cpu = cpu_time();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for c in clients.clone() {
        let body = body.clone();
        let depth = window as usize;
        set.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            let mut q = std::collections::VecDeque::new();
            for _ in 0..per {
                q.push_back((
                    Instant::now(),
                    c.start_send("urn:bench/OneWay", body.clone()),
                ));
                if q.len() >= depth {
                    if let Some((t, p)) = q.pop_front() {
                        p.await.unwrap();
                        lat.push(t.elapsed());
                    }
                }
            }
            while let Some((t, p)) = q.pop_front() {
                p.await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = set.join_next().await {
        lat.extend(r.unwrap());
    }
    let rate = (per * sessions) as f64 / start.elapsed().as_secs_f64();
    let cpu = cpu_per_msg(cpu, per * sessions);
    let retrans: u64 = clients.iter().map(|c| c.stats().retransmitted).sum();
    for c in &clients {
        c.close().await.unwrap();
    }
    (rate, pct(&mut lat, 0.5), pct(&mut lat, 0.99), retrans, cpu)
}

/// The service's share alone: a service without a handler (unordered, window 4,096, so that
/// nothing in flight falls outside it) answering sequence messages of one session that a plain
/// HTTP client POSTs, pre-encoded like the ceiling's envelope, in order from 64 concurrent
/// requests. CPU per message against the ceiling's is
/// what the service side of reliable messaging costs (diagnostic, `HTTP_BENCH_PHASES=service`).
async fn service_only(n: usize) -> (f64, f64) {
    let binding = Binding::ws_http()
        .max_transfer_window_size(4096)
        .ordered(false);
    let svc = Service::builder(binding)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = svc.url("/svc");
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let framing = wsrm_wire::Framing::soap12_wsa10();
    let r = client
        .request(soap_post(
            &url,
            create_sequence(&url, "urn:uuid:service-only"),
        ))
        .await
        .unwrap();
    let csr =
        wsrm_wire::decode(read_all(r.into_body()).await.unwrap(), &Default::default()).unwrap();
    let Body::CreateSequenceResponse(csr) = csr.message.body else {
        panic!("no CreateSequenceResponse");
    };
    let body = Bytes::from(body_1k());
    let envs: Vec<Bytes> = (1..=n as u64)
        .map(|number| {
            let mut m = Message::new(
                RmVersion::Wsrm10,
                Action::Other(Arc::from("urn:bench/OneWay")),
                Body::Application(body.clone()),
            );
            m.sequence = Some(SequenceHeader {
                identifier: csr.identifier.clone(),
                number,
                last_message: false,
            });
            m.to = Some(Arc::from(url.as_str()));
            wsrm_wire::encode(&m, &framing).unwrap()
        })
        .collect();
    let envs = Arc::new(envs);
    let cpu = cpu_time();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..64 {
        let (client, envs, url, next) = (client.clone(), envs.clone(), url.clone(), next.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= envs.len() {
                    break;
                }
                let req = soap_post(&url, envs[i].clone());
                let r = client.request(req).await.unwrap();
                assert_eq!(r.status(), http::StatusCode::OK);
                let _ = read_all(r.into_body()).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let cpu = cpu_per_msg(cpu, n);
    assert_eq!(svc.stats().delivered, n as u64);
    (rate, cpu)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

async fn idle_sessions(count: usize) -> (u64, u64) {
    let exe = std::env::current_exe().unwrap();
    let mut child = tokio::process::Command::new(exe)
        .arg("--serve-idle")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .unwrap();
    let url = line.trim().to_string();
    let before = rss_kib(pid);
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..32 {
        let (client, url) = (client.clone(), url.clone());
        set.spawn(async move {
            let mut ok = 0;
            let mut i = w;
            while i < count {
                let env = create_sequence(&url, &format!("urn:uuid:idle-{i}"));
                let req = soap_post(&url, env);
                let r = client.request(req).await.unwrap();
                ok += u64::from(r.status() == http::StatusCode::OK);
                let _ = r.into_body().collect().await;
                i += 32;
            }
            ok
        });
    }
    let mut opened = 0;
    while let Some(r) = set.join_next().await {
        opened += r.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let _ = child.kill().await;
    eprintln!("idle sessions opened: {opened}; service RSS before {before} KiB");
    (opened, after)
}

async fn serve_idle() {
    let binding = Binding::ws_http();
    // With an application handler: each session holds its handler task, as real services'
    // sessions do (a service without a handler has none).
    let svc = Service::builder(binding)
        .handler(|_: &wsrm::SessionInfo| Discard)
        .max_sessions(20_000)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    println!("{}", svc.url("/svc"));
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

/// One phase's measurement: throughput, CPU µs per message, latency p50/p99, retransmissions.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    cpu: f64,
    p50: Duration,
    p99: Duration,
    retrans: u64,
}

impl Measured {
    const NONE: Measured = Measured {
        rate: f64::NAN,
        cpu: f64::NAN,
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        retrans: 0,
    };

    fn of_ceiling((rate, cpu, p50, p99): Ceiling) -> Self {
        Measured {
            rate,
            cpu,
            p50,
            p99,
            retrans: 0,
        }
    }
}

/// The measurement phases, in the order they run; the diagnostics `ceiling_ack` and `service`
/// run only when named.
const PHASES: [&str; 11] = [
    "ceiling",
    "ceiling_ack",
    "same",
    "one",
    "one_handler",
    "ceiling512",
    "same512",
    "many",
    "service",
    "many_handler",
    "idle",
];

/// Runs one phase in this process.
async fn run_phase(phase: &str, n: usize) -> Measured {
    match phase {
        "ceiling" => Measured::of_ceiling(ceiling(n, 64, None).await),
        "ceiling_ack" => Measured::of_ceiling(ceiling(n, 64, Some(standalone_ack())).await),
        "same" => Measured::of_ceiling(ceiling_same_settings(n, 64).await),
        "ceiling512" => Measured::of_ceiling(ceiling(n, 512, None).await),
        "same512" => Measured::of_ceiling(ceiling_same_settings(n, 512).await),
        "one" | "one_handler" | "many" | "many_handler" => {
            let (sessions, window) = if phase.starts_with("one") {
                (1, 64)
            } else {
                (64, 8)
            };
            let (rate, p50, p99, retrans, cpu) =
                reliable(sessions, window, n, phase.ends_with("handler")).await;
            Measured {
                rate,
                cpu,
                p50,
                p99,
                retrans,
            }
        }
        "service" => {
            let (rate, cpu) = service_only(n).await;
            Measured {
                rate,
                cpu,
                ..Measured::NONE
            }
        }
        "idle" => {
            let (opened, rss) = idle_sessions(10_000).await;
            // reported through the fields: sessions opened, RSS in KiB
            Measured {
                rate: opened as f64,
                cpu: rss as f64,
                ..Measured::NONE
            }
        }
        other => panic!("unknown phase {other}"),
    }
}

/// Runs one phase in a child process (`--phase NAME N`), so that no phase inherits another's
/// sockets, connections in TIME_WAIT, allocator state or runtime threads: run in one process,
/// the 512-connection phases depended on which phases ran before them (BENCHMARKS.md, session
/// 6).
async fn run_phase_in_child(phase: &str, n: usize) -> Measured {
    let exe = std::env::current_exe().unwrap();
    let out = tokio::process::Command::new(exe)
        .args(["--phase", phase, &n.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "phase {phase} failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("phase {phase} printed no result: {text}"));
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    Measured {
        rate: f[0],
        cpu: f[1],
        p50: Duration::from_nanos(f[2] as u64),
        p99: Duration::from_nanos(f[3] as u64),
        retrans: f[4] as u64,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-idle") {
        serve_idle().await;
        return;
    }
    // `--phase NAME [N]`: one phase in this process (what the default run starts per phase;
    // also the way to profile a phase, e.g. under callgrind, which does not follow children).
    if args.get(1).map(String::as_str) == Some("--phase") {
        let phase = args.get(2).expect("--phase NAME [MESSAGES]");
        let n: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20_000);
        let m = run_phase(phase, n).await;
        println!(
            "RESULT {} {} {} {} {}",
            m.rate,
            m.cpu,
            m.p50.as_nanos(),
            m.p99.as_nanos(),
            m.retrans
        );
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    // HTTP_BENCH_PHASES=ceiling,same,one,one_handler,ceiling512,same512,many,many_handler,idle
    // (default: all; the diagnostic phase `service` runs only when named) runs only those
    // phases, each in its own process.
    let phases = std::env::var("HTTP_BENCH_PHASES").unwrap_or_default();
    let selected = |p: &str| {
        if phases.is_empty() {
            !matches!(p, "service" | "ceiling_ack")
        } else {
            phases.split(',').any(|x| x == p)
        }
    };
    let mut r = std::collections::HashMap::new();
    for p in PHASES {
        if selected(p) {
            r.insert(p, run_phase_in_child(p, n).await);
        }
    }
    let get = |p: &str| r.get(p).copied().unwrap_or(Measured::NONE);
    let pct = |a: f64, b: f64| 100.0 * a / b;
    // The ceilings run at the reliable runs' numbers of requests in flight: 64 (1 session,
    // window 64) and 512 (64 sessions of window 8, one HTTP exchange per message in flight).
    let (c, cs, c5, cs5) = (
        get("ceiling"),
        get("same"),
        get("ceiling512"),
        get("same512"),
    );
    if r.contains_key("ceiling") {
        println!(
            "ceiling (plain SOAP POST, no RM, 64 concurrent): {:.0} msg/s, request->response p50 {:?} p99 {:?}, CPU {:.1} us/msg",
            c.rate, c.p50, c.p99, c.cpu
        );
    }
    if r.contains_key("same") {
        println!(
            "ceiling with wsrm's transport settings (plain SOAP POST, no RM, 64 concurrent): {:.0} msg/s, request->response p50 {:?} p99 {:?}, CPU {:.1} us/msg",
            cs.rate, cs.p50, cs.p99, cs.cpu
        );
    }
    if let Some(m) = r.get("ceiling_ack") {
        println!(
            "ceiling answered 200 with a standalone acknowledgement (plain SOAP POST, no RM, 64 concurrent): {:.0} msg/s ({:.0} % of ceiling), request->response p50 {:?} p99 {:?}, CPU {:.1} us/msg ({:.0} % of ceiling's)",
            m.rate, pct(m.rate, c.rate), m.p50, m.p99, m.cpu, pct(m.cpu, c.cpu)
        );
    }
    if let Some(m) = r.get("one") {
        println!(
            "reliable, 1 session, window 64: {:.0} msg/s ({:.0} % of ceiling), send->ack p50 {:?} p99 {:?}, retransmissions {}, CPU {:.1} us/msg ({:.0} % of ceiling's); with wsrm's settings: {:.0} % of ceiling, CPU {:.0} %",
            m.rate, pct(m.rate, c.rate), m.p50, m.p99, m.retrans, m.cpu, pct(m.cpu, c.cpu), pct(m.rate, cs.rate), pct(m.cpu, cs.cpu)
        );
    }
    if let Some(m) = r.get("one_handler") {
        println!(
            "reliable with an application handler, 1 session, window 64: {:.0} msg/s ({:.0} % of ceiling), send->ack p50 {:?} p99 {:?}, retransmissions {}, CPU {:.1} us/msg ({:.0} % of ceiling's)",
            m.rate, pct(m.rate, c.rate), m.p50, m.p99, m.retrans, m.cpu, pct(m.cpu, c.cpu)
        );
    }
    if r.contains_key("ceiling512") {
        println!(
            "ceiling (plain SOAP POST, no RM, 512 concurrent): {:.0} msg/s, request->response p50 {:?} p99 {:?}, CPU {:.1} us/msg",
            c5.rate, c5.p50, c5.p99, c5.cpu
        );
    }
    if r.contains_key("same512") {
        println!(
            "ceiling with wsrm's transport settings (plain SOAP POST, no RM, 512 concurrent): {:.0} msg/s, request->response p50 {:?} p99 {:?}, CPU {:.1} us/msg",
            cs5.rate, cs5.p50, cs5.p99, cs5.cpu
        );
    }
    if let Some(m) = r.get("many") {
        println!(
            "reliable, 64 sessions, window 8: {:.0} msg/s ({:.0} % of the 512-concurrent ceiling, {:.0} % of the 64-concurrent one), send->ack p50 {:?} p99 {:?}, retransmissions {}, CPU {:.1} us/msg ({:.0} % of the 512-concurrent ceiling's); with wsrm's settings: {:.0} % of ceiling, CPU {:.0} %",
            m.rate, pct(m.rate, c5.rate), pct(m.rate, c.rate), m.p50, m.p99, m.retrans, m.cpu, pct(m.cpu, c5.cpu), pct(m.rate, cs5.rate), pct(m.cpu, cs5.cpu)
        );
    }
    if let Some(m) = r.get("service") {
        println!(
            "service only (plain client POSTing pre-encoded sequence messages, 64 concurrent): {:.0} msg/s ({:.0} % of ceiling), CPU {:.1} us/msg ({:.0} % of ceiling's)",
            m.rate, pct(m.rate, c.rate), m.cpu, pct(m.cpu, c.cpu)
        );
    }
    if let Some(m) = r.get("many_handler") {
        println!(
            "reliable with an application handler, 64 sessions, window 8: {:.0} msg/s ({:.0} % of the 512-concurrent ceiling), send->ack p50 {:?} p99 {:?}, retransmissions {}, CPU {:.1} us/msg ({:.0} % of the 512-concurrent ceiling's)",
            m.rate, pct(m.rate, c5.rate), m.p50, m.p99, m.retrans, m.cpu, pct(m.cpu, c5.cpu)
        );
    }
    if let Some(m) = r.get("idle") {
        println!(
            "{:.0} idle sessions: service RSS {:.1} MiB",
            m.rate,
            m.cpu / 1024.0
        );
    }
}
