//! Load client of the comparative benchmark (issue 7) on the wsrm library API: K concurrent
//! one-way reliable sessions in one process, per-message send→ack latency.
//!
//! ```text
//! wsrm serve --listen 127.0.0.1:8080 --rm 1.1 &
//! cargo run --release -p wsrm-cli --example wsrm_load -- --url http://127.0.0.1:8080/ \
//!     --rm 1.1 --count 10000 --warmup 500 --size 1024 --sessions 64
//! ```
//!
//! Each session opens a `wsrm::Client` (SOAP 1.2, WS-Addressing 1.0, like `wsrm send`), sends
//! `--warmup` untimed then `--count` timed one-way messages with up to `--inflight` sends
//! outstanding (default: the window, MaxTransferWindowSize 8), then closes. The latency of a
//! message is from the call of `Client::send` until it completes (the service acknowledged it,
//! retransmissions included). Prints `BENCH-START` when every session is open and
//! `BENCH {json}` at the end (read by bench/run).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Barrier;

// The allocator of the `wsrm` binary (the ceiling `plain_soap` and `wsrm_load` use it too).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Clone)]
#[command(about = "One-way reliable load over the wsrm client API (benchmark client)")]
struct Args {
    /// Service URL.
    #[arg(long)]
    url: String,
    /// WS-RM version: 1.0 or 1.1.
    #[arg(long, default_value = "1.1")]
    rm: String,
    /// Timed messages per session.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// Untimed messages per session first.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Body text size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// MaxTransferWindowSize of the binding.
    #[arg(long, default_value_t = 8)]
    window: u32,
    /// Sends outstanding per session (default: the window).
    #[arg(long)]
    inflight: Option<usize>,
}

const ACTION: &str = "urn:wsrm:payload/Ping";

fn body(n: usize, size: usize) -> bytes::Bytes {
    let mut text = format!("message-{n}-");
    while text.len() < size {
        text.push('x');
    }
    bytes::Bytes::from(format!("<p xmlns=\"urn:wsrm:payload\">{text}</p>"))
}

struct Outcome {
    latencies: Vec<f64>,
    end: Instant,
    retransmitted: u64,
    failed: usize,
    closed: bool,
}

async fn session(
    args: Arc<Args>,
    binding: Arc<wsrm::Binding>,
    ready: Arc<Barrier>,
    go: Arc<Barrier>,
) -> anyhow::Result<Outcome> {
    let opened = wsrm::Client::open(&args.url, &binding, wsrm::ClientOptions::default()).await;
    // Every session must reach the barriers, even a failed one, or the others wait forever.
    let client = match opened {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("wsrm_load: cannot open a session: {e}");
            None
        }
    };
    let inflight = args.inflight.unwrap_or(args.window as usize).max(1);
    let mut failed = 0;
    let mut latencies = Vec::with_capacity(args.count);
    if let Some(c) = &client {
        failed += run(c, 1, args.warmup, inflight, args.size, None).await;
    }
    ready.wait().await;
    go.wait().await;
    let Some(client) = client else {
        anyhow::bail!("session not opened");
    };
    let first = args.warmup + 1;
    failed += run(
        &client,
        first,
        args.count,
        inflight,
        args.size,
        Some(&mut latencies),
    )
    .await;
    let end = Instant::now();
    let closed = match client.close().await {
        Ok(_) => true,
        Err(e) => {
            eprintln!("wsrm_load: close failed: {e}");
            false
        }
    };
    Ok(Outcome {
        latencies,
        end,
        retransmitted: client.stats().retransmitted,
        failed,
        closed,
    })
}

/// Sends messages first..first+count with up to `inflight` outstanding; returns the failures.
async fn run(
    client: &wsrm::Client,
    first: usize,
    count: usize,
    inflight: usize,
    size: usize,
    mut latencies: Option<&mut Vec<f64>>,
) -> usize {
    let mut pending = FuturesUnordered::new();
    let mut next = first;
    let mut failed = 0;
    loop {
        while pending.len() < inflight && next < first + count {
            let c = client.clone();
            let b = body(next, size);
            pending.push(async move {
                let t0 = Instant::now();
                let r = c.send(ACTION, b).await;
                (r, t0.elapsed().as_secs_f64() * 1e3)
            });
            next += 1;
        }
        match pending.next().await {
            Some((Ok(_), ms)) => {
                if let Some(l) = latencies.as_deref_mut() {
                    l.push(ms);
                }
            }
            Some((Err(e), _)) => {
                if failed == 0 {
                    eprintln!("wsrm_load: send failed: {e}");
                }
                failed += 1;
            }
            None => return failed,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    anyhow::ensure!(
        args.sessions > 0 && args.count > 0,
        "--sessions and --count must be > 0"
    );
    let mut binding = wsrm::Binding::custom()
        .soap(wsrm::SoapVersion::Soap12)
        .addressing(wsrm::AddressingVersion::Wsa10)
        .max_transfer_window_size(args.window);
    match args.rm.as_str() {
        "1.1" => binding = binding.rm_version(wsrm::RmVersion::Wsrm11),
        "1.0" => {}
        other => anyhow::bail!("--rm must be 1.0 or 1.1, not {other}"),
    }
    binding.validate().context("binding")?;
    let binding = Arc::new(binding);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let ready = Arc::new(Barrier::new(args.sessions + 1));
        let go = Arc::new(Barrier::new(args.sessions + 1));
        let tasks: Vec<_> = (0..args.sessions)
            .map(|_| {
                tokio::spawn(session(
                    args.clone(),
                    binding.clone(),
                    ready.clone(),
                    go.clone(),
                ))
            })
            .collect();
        ready.wait().await;
        println!("BENCH-START");
        let t0 = Instant::now();
        go.wait().await;
        let mut lat = Vec::with_capacity(args.sessions * args.count);
        let (mut end, mut failed, mut retransmitted, mut unclosed, mut errors) = (t0, 0, 0, 0, 0);
        for t in tasks {
            match t.await? {
                Ok(o) => {
                    lat.extend(o.latencies);
                    end = end.max(o.end);
                    failed += o.failed;
                    retransmitted += o.retransmitted;
                    unclosed += usize::from(!o.closed);
                }
                Err(e) => {
                    eprintln!("wsrm_load: {e}");
                    errors += 1;
                }
            }
        }
        lat.sort_by(f64::total_cmp);
        let n = lat.len();
        let pick = |q: f64| lat.get((n.saturating_sub(1) as f64 * q) as usize).copied();
        let elapsed = end.duration_since(t0).as_secs_f64();
        let ok = errors == 0 && failed == 0 && unclosed == 0 && n == args.sessions * args.count;
        let result = serde_json::json!({
            "impl": "wsrm-api",
            "rm": args.rm,
            "ok": ok,
            "sessions": args.sessions,
            "messages": n,
            "size": args.size,
            "warmup": args.warmup,
            "window": args.window,
            "elapsed": elapsed,
            "msgs_per_s": n as f64 / elapsed.max(1e-9),
            "p50_ms": pick(0.5),
            "p99_ms": pick(0.99),
            "max_ms": lat.last(),
            "mean_ms": lat.iter().sum::<f64>() / n.max(1) as f64,
            "retries": retransmitted,
            "failed": failed,
            "session_errors": errors,
            "unclosed": unclosed,
        });
        println!("BENCH {result}");
        anyhow::Ok(())
    })
}
