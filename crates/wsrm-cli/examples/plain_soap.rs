//! The ceiling of the comparative benchmark (issue 7): plain SOAP 1.2 one-way POSTs over
//! HTTP/1.1 keep-alive on the same stack wsrm uses (tokio + hyper 1), with no reliable messaging.
//!
//! ```text
//! cargo run --release -p wsrm-cli --example plain_soap -- serve --listen 127.0.0.1:8080
//! cargo run --release -p wsrm-cli --example plain_soap -- load --url http://127.0.0.1:8080/ \
//!     --count 10000 --warmup 1000 --size 1024 --sessions 64
//! ```
//!
//! `serve` reads each request body completely and answers `202 Accepted` with an empty body
//! (what a SOAP 1.2 one-way operation answers). `load` opens one keep-alive connection per
//! session and sends, per session, `--warmup` untimed then `--count` timed envelopes, each
//! waiting for the previous answer (like a reliable session with a window of one). It prints
//! `BENCH-START` when the timed window opens and `BENCH {json}` at the end (read by bench/run).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Barrier;

// The allocator of the `wsrm` binary (the ceiling `plain_soap` and `wsrm_load` use it too).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Plain SOAP one-way POST server and load client (the benchmark ceiling)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept SOAP one-way POSTs and answer 202 with an empty body.
    Serve {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send one-way envelopes over K keep-alive connections and report throughput and latency.
    Load {
        /// Service URL (http://HOST:PORT/PATH).
        #[arg(long)]
        url: String,
        /// Timed messages per session.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Untimed messages per session before the timed window.
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        /// Body text size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Concurrent sessions (connections).
        #[arg(long, default_value_t = 1)]
        sessions: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Serve { listen } => rt.block_on(serve(listen)),
        Cmd::Load {
            url,
            count,
            warmup,
            size,
            sessions,
        } => rt.block_on(load(url, count, warmup, size, sessions)),
    }
}

async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.context("bind")?;
    eprintln!(
        "plain_soap: listening on http://{}/",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                // Read the whole envelope, as a SOAP stack must before it can dispatch.
                let status = match req.into_body().collect().await {
                    Ok(_) => StatusCode::ACCEPTED,
                    Err(_) => StatusCode::BAD_REQUEST,
                };
                let mut resp = Response::new(Empty::<Bytes>::new());
                *resp.status_mut() = status;
                Ok::<_, std::convert::Infallible>(resp)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn envelope(to: &str, n: usize, size: usize) -> Bytes {
    let mut text = format!("message-{n}-");
    while text.len() < size {
        text.push('x');
    }
    Bytes::from(format!(
        "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\" \
         xmlns:a=\"http://www.w3.org/2005/08/addressing\"><s:Header>\
         <a:Action s:mustUnderstand=\"1\">urn:wsrm:payload/Ping</a:Action>\
         <a:MessageID>urn:uuid:00000000-0000-4000-8000-{n:012}</a:MessageID>\
         <a:To s:mustUnderstand=\"1\">{to}</a:To></s:Header><s:Body>\
         <p xmlns=\"urn:wsrm:payload\">{text}</p></s:Body></s:Envelope>"
    ))
}

struct Session {
    latencies: Vec<f64>,
    end: Instant,
    failed: usize,
}

async fn session(
    url: Arc<String>,
    count: usize,
    warmup: usize,
    size: usize,
    ready: Arc<Barrier>,
    go: Arc<Barrier>,
) -> anyhow::Result<Session> {
    let uri: hyper::Uri = url.parse().context("--url")?;
    let host = uri.host().context("--url has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let authority = format!("{host}:{port}");
    let stream = TcpStream::connect(&authority).await.context("connect")?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(count);
    let mut failed = 0;
    let mut send = |n: usize| {
        let req = Request::post(uri.clone())
            .header(hyper::header::HOST, authority.as_str())
            .header(
                hyper::header::CONTENT_TYPE,
                "application/soap+xml; charset=utf-8; action=\"urn:wsrm:payload/Ping\"",
            )
            .body(Full::new(envelope(&url, n, size)));
        let fut = req.map(|r| sender.send_request(r));
        async move {
            let resp = fut?.await?;
            let ok = resp.status() == StatusCode::ACCEPTED;
            resp.into_body().collect().await?;
            anyhow::Ok(ok)
        }
    };
    for n in 1..=warmup {
        send(n).await?;
    }
    ready.wait().await;
    go.wait().await;
    for n in warmup + 1..=warmup + count {
        let t0 = Instant::now();
        if !send(n).await? {
            failed += 1;
        }
        latencies.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Session {
        latencies,
        end: Instant::now(),
        failed,
    })
}

async fn load(
    url: String,
    count: usize,
    warmup: usize,
    size: usize,
    sessions: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        sessions > 0 && count > 0,
        "--sessions and --count must be > 0"
    );
    let url = Arc::new(url);
    let ready = Arc::new(Barrier::new(sessions + 1));
    let go = Arc::new(Barrier::new(sessions + 1));
    let mut tasks = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        tasks.push(tokio::spawn(session(
            url.clone(),
            count,
            warmup,
            size,
            ready.clone(),
            go.clone(),
        )));
    }
    ready.wait().await;
    println!("BENCH-START");
    let t0 = Instant::now();
    go.wait().await;
    let mut lat = Vec::with_capacity(sessions * count);
    let mut end = t0;
    let mut failed = 0;
    for t in tasks {
        let s = t.await??;
        lat.extend(s.latencies);
        end = end.max(s.end);
        failed += s.failed;
    }
    lat.sort_by(f64::total_cmp);
    let n = lat.len();
    let pick = |q: f64| {
        lat.get(((n.saturating_sub(1)) as f64 * q) as usize)
            .copied()
    };
    let elapsed = end.duration_since(t0).as_secs_f64();
    let result = serde_json::json!({
        "impl": "plain",
        "ok": failed == 0 && n == sessions * count,
        "sessions": sessions,
        "messages": n,
        "size": size,
        "warmup": warmup,
        "elapsed": elapsed,
        "msgs_per_s": n as f64 / elapsed,
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "max_ms": lat.last(),
        "mean_ms": lat.iter().sum::<f64>() / n.max(1) as f64,
        "failed": failed,
    });
    println!("BENCH {result}");
    Ok(())
}
