//! Durable one-way throughput over loopback HTTP against the in-memory mode, in the same run
//! (issue 6; recorded in BENCHMARKS.md, section "Durable sessions (issue 6)").
//!
//! `cargo run --release -p wsrm --example durable_bench [-- MESSAGES [rr]]`
//!
//! `DURABLE_BENCH_MODES=memory,service,both` (the default) picks the cases.
//!
//! With `rr` the sessions are request-reply (each message a request echoed by the service);
//! "durable both" then also stores every reply at the client before acknowledging it, and
//! commits its delivery.
//!
//! Cases (1 KiB bodies, SOAP 1.2 + WS-Addressing 1.0, WS-RM 1.1; each run twice, alternating):
//! * memory: no store (WCF's behaviour);
//! * durable service: the service on an SQLite store (`Synchronous::Full`: every group
//!   commit is fsynced) — each message is stored before its ack and its delivery committed;
//! * durable both: the client on an SQLite store too (each envelope stored before its first
//!   transmission).
//!
//! Shapes: 1 session with window 64 and 64 outstanding sends; 16 sessions with the default
//! window 8.

use std::time::Instant;

use std::sync::Arc;

use wsrm::store::Store;
use wsrm::{
    Binding, Client, ClientOptions, Delivery, HandlerFuture, Outcome, Service, SessionHandler,
};

// The allocator the `wsrm` binary ships with (BENCHMARKS.md, "wsrm runtime (HTTP)").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Echoes requests (one-way messages get no reply).
struct Echo;

impl SessionHandler for Echo {
    fn handle(&mut self, d: Delivery) -> HandlerFuture<'_> {
        let out = if d.expects_reply {
            Outcome::Reply {
                action: Arc::from("urn:bench/EchoResponse"),
                body: d.body.clone(),
            }
        } else {
            Outcome::NoReply
        };
        Box::pin(async move { out })
    }
}

fn body_1k() -> String {
    let filler = "x".repeat(1024 - 40);
    format!("<p xmlns=\"urn:wsrm:payload\">{filler}</p>")
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Memory,
    DurableService,
    DurableBoth,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::DurableService => "durable service",
            Mode::DurableBoth => "durable service + client",
        }
    }
}

async fn run(mode: Mode, sessions: usize, window: u32, n: usize, rr: bool) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let binding = Binding::ws2007_http().max_transfer_window_size(window);
    let mut builder = Service::builder(binding.clone()).handler(|_: &wsrm::SessionInfo| Echo);
    let svc_store = if mode != Mode::Memory {
        let s = Store::open_sqlite(dir.path().join("svc.db"), &Default::default()).expect("store");
        builder = builder.store(s.clone());
        Some(s)
    } else {
        None
    };
    let svc = builder
        .bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let url = svc.url("/svc");
    let per = n / sessions;
    let body = body_1k();
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for s in 0..sessions {
        let (binding, url, body) = (binding.clone(), url.clone(), body.clone());
        let store = if mode == Mode::DurableBoth {
            Some(
                Store::open_sqlite(dir.path().join(format!("c{s}.db")), &Default::default())
                    .expect("client store"),
            )
        } else {
            None
        };
        set.spawn(async move {
            let opts = ClientOptions {
                label: store.as_ref().map(|_| "bench".to_string()),
                store,
                request_reply: rr,
                ..ClientOptions::default()
            };
            let c = Client::open(&url, &binding, opts).await.expect("open");
            let mut q = std::collections::VecDeque::new();
            for _ in 0..per {
                q.push_back(if rr {
                    c.start_request("urn:bench/Echo", body.clone())
                        .map(|r| r.number)
                } else {
                    c.start_send("urn:bench/OneWay", body.clone())
                });
                if q.len() >= window as usize {
                    if let Some(p) = q.pop_front() {
                        p.await.expect("send");
                    }
                }
            }
            while let Some(p) = q.pop_front() {
                p.await.expect("send");
            }
            let st = c.close().await.expect("close");
            st.retransmitted
        });
    }
    let mut retx = 0;
    while let Some(r) = set.join_next().await {
        retx += r.expect("task");
    }
    let rate = (per * sessions) as f64 / start.elapsed().as_secs_f64();
    svc.shutdown().await;
    if let Some(s) = svc_store.as_ref().and_then(|s| s.as_sqlite()) {
        let st = s.stats();
        eprintln!("    service store: {st:?}");
    }
    (rate, retx)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let rr = std::env::args().nth(2).as_deref() == Some("rr");
    // DURABLE_BENCH_MODES=memory,service,both (default: all three) picks the cases, e.g. for
    // a profile of one of them.
    let modes: Vec<Mode> = std::env::var("DURABLE_BENCH_MODES")
        .unwrap_or_else(|_| "memory,service,both".into())
        .split(',')
        .filter_map(|m| match m.trim() {
            "memory" => Some(Mode::Memory),
            "service" => Some(Mode::DurableService),
            "both" => Some(Mode::DurableBoth),
            _ => None,
        })
        .collect();
    let shapes: Vec<(usize, u32)> = std::env::var("DURABLE_BENCH_SHAPES")
        .ok()
        .map(|s| {
            s.split(',')
                .filter_map(|p| p.split_once('x'))
                .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .collect()
        })
        .unwrap_or_else(|| vec![(1, 64), (16, 8)]);
    for (sessions, window) in shapes {
        println!(
            "{sessions} session(s), window {window}, {n} {} of 1 KiB:",
            if rr { "requests" } else { "messages" }
        );
        let mut results: Vec<(Mode, Vec<f64>)> = Vec::new();
        for round in 0..2 {
            for mode in modes.iter().copied() {
                let (rate, retx) = run(mode, sessions, window, n, rr).await;
                println!(
                    "  round {round}: {:<26} {rate:>9.0} msg/s  ({retx} retransmissions)",
                    mode.name()
                );
                match results.iter_mut().find(|(m, _)| *m == mode) {
                    Some((_, v)) => v.push(rate),
                    None => results.push((mode, vec![rate])),
                }
            }
        }
        let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        let mem = results
            .iter()
            .find(|(m, _)| *m == Mode::Memory)
            .map(|(_, v)| mean(v))
            .unwrap_or(1.0);
        for (mode, v) in &results {
            println!(
                "  mean {:<26} {:>9.0} msg/s  = {:>3.0} % of memory",
                mode.name(),
                mean(v),
                100.0 * mean(v) / mem
            );
        }
    }
}
