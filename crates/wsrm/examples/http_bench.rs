//! Loopback HTTP benchmark of the runtime (recorded in BENCHMARKS.md, section "wsrm runtime").
//!
//! `cargo run --release -p wsrm --example http_bench [-- MESSAGES]`
//!
//! 1. ceiling: plain SOAP 1.2 one-way POSTs without RM (1 KiB bodies) on the same hyper stack,
//!    64 concurrent requests, answered 202;
//! 2. reliable one-way throughput and send→ack latency (p50/p99), 1 KiB bodies, 1 session
//!    (window 64, 64 outstanding sends) and 64 concurrent sessions (default window 8);
//! 3. resident memory of a service process holding 10,000 open idle sessions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use wsrm::{Binding, Client, ClientOptions, Service};
use wsrm_proto::msg::{Action, Body, CreateSequence, Message, RmVersion};

fn body_1k() -> String {
    let filler = "x".repeat(1024 - 40);
    format!("<p xmlns=\"urn:wsrm:payload\">{filler}</p>")
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

async fn ceiling(n: usize) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let b = req.into_body().collect().await?.to_bytes();
                        // Same work as the reliable path's codec step: parse the envelope.
                        let _ = wsrm_wire::decode(b, &wsrm_wire::Limits::default());
                        let mut r = http::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = http::StatusCode::ACCEPTED;
                        Ok::<_, hyper::Error>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let mut m = Message::new(
        RmVersion::Wsrm10,
        Action::Other(Arc::from("urn:bench/OneWay")),
        Body::Application(Bytes::from(body_1k())),
    );
    m.to = Some(Arc::from(format!("http://{addr}/svc").as_str()));
    let env = wsrm_wire::encode(&m, &wsrm_wire::Framing::soap12_wsa10()).unwrap();
    let url = format!("http://{addr}/svc");
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..64 {
        let (client, env, url) = (client.clone(), env.clone(), url.clone());
        set.spawn(async move {
            let mut i = w;
            while i < n {
                let req = http::Request::post(&url)
                    .header("content-type", "application/soap+xml; charset=utf-8")
                    .body(Full::new(env.clone()))
                    .unwrap();
                let r = client.request(req).await.unwrap();
                let _ = r.into_body().collect().await;
                i += 64;
            }
        });
    }
    while set.join_next().await.is_some() {}
    n as f64 / start.elapsed().as_secs_f64()
}

async fn reliable(sessions: usize, window: u32, n: usize) -> (f64, Duration, Duration, u64) {
    let binding = Binding::ws_http().max_transfer_window_size(window);
    let svc = Service::builder(binding.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
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
    let retrans: u64 = clients.iter().map(|c| c.stats().retransmitted).sum();
    for c in &clients {
        c.close().await.unwrap();
    }
    (rate, pct(&mut lat, 0.5), pct(&mut lat, 0.99), retrans)
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
                let mut m = Message::new(
                    RmVersion::Wsrm10,
                    Action::CreateSequence,
                    Body::CreateSequence(CreateSequence {
                        acks_to: String::new(),
                        expires: None,
                        offer: None,
                    }),
                );
                m.message_id = Some(Arc::from(format!("urn:uuid:idle-{i}").as_str()));
                m.to = Some(Arc::from(url.as_str()));
                let env = wsrm_wire::encode(&m, &wsrm_wire::Framing::soap12_wsa10()).unwrap();
                let req = http::Request::post(&url)
                    .header("content-type", "application/soap+xml; charset=utf-8")
                    .body(Full::new(env))
                    .unwrap();
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
    let svc = Service::builder(binding)
        .max_sessions(20_000)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    println!("{}", svc.url("/svc"));
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-idle") {
        serve_idle().await;
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let c = ceiling(n).await;
    println!("ceiling (plain SOAP POST, no RM, 64 concurrent): {c:.0} msg/s");
    let (r1, p50, p99, re1) = reliable(1, 64, n).await;
    println!(
        "reliable, 1 session, window 64: {r1:.0} msg/s ({:.0} % of ceiling), send->ack p50 {p50:?} p99 {p99:?}, retransmissions {re1}",
        100.0 * r1 / c
    );
    let (r64, p50, p99, re64) = reliable(64, 8, n).await;
    println!(
        "reliable, 64 sessions, window 8: {r64:.0} msg/s ({:.0} % of ceiling), send->ack p50 {p50:?} p99 {p99:?}, retransmissions {re64}",
        100.0 * r64 / c
    );
    let (opened, rss) = idle_sessions(10_000).await;
    println!(
        "{opened} idle sessions: service RSS {:.1} MiB",
        rss as f64 / 1024.0
    );
}
