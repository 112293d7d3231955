//! `wsrm demo`: service, lossy intermediary and client in one process.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::common::{self, RmArg};

const HELP: &str = "\
Starts, on 127.0.0.1 with ephemeral ports, a reliable-session service, a fault-injecting SOAP
intermediary in front of it (by default 20 % of requests dropped, 10 % duplicated, 10 % held
and reordered) and a client that sends --count messages through the intermediary in one
session. Prints what the intermediary did and checks that the service received every message
exactly once and in order.

With --durable the demo shows a crash and a recovery instead: `wsrm serve` and `wsrm send`
run as separate processes on SQLite stores (in a temporary directory); the demo SIGKILLs the
service after a third of the messages and the sender after two thirds, restarts both (the
sender with --resume) and checks the service's delivered file: every message exactly once,
in order.

Examples:
  wsrm demo
  wsrm demo --count 200 --rm 1.1 --seed 7
  wsrm demo --durable --count 3000

Exit codes: 0 every message delivered exactly once, in order; 1 otherwise; 2 bad arguments.";

/// Run a service, a lossy intermediary and a client in one process and show exactly-once,
/// in-order delivery.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Messages to send.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    count: u64,
    /// Probability that the intermediary drops a request.
    #[arg(long, value_name = "P", default_value_t = 0.2)]
    drop: f64,
    /// Probability that the intermediary duplicates a request.
    #[arg(long, value_name = "P", default_value_t = 0.1)]
    dup: f64,
    /// Probability that the intermediary holds a request and forwards it after later ones.
    #[arg(long, value_name = "P", default_value_t = 0.1)]
    reorder: f64,
    /// Seed of the intermediary's decisions.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// WS-RM version.
    #[arg(long, value_enum, default_value = "1.0")]
    rm: RmArg,
    /// MaxTransferWindowSize of client and service.
    #[arg(long, value_name = "N", default_value_t = 64)]
    window: u32,
    /// Show a crash and recovery of durable sessions (SQLite stores, SIGKILLed processes).
    #[arg(long)]
    durable: bool,
}

struct Record {
    log: Arc<Mutex<Vec<(String, u64, String)>>>,
    sequence: String,
}

impl wsrm::SessionHandler for Record {
    fn handle(&mut self, d: wsrm::Delivery) -> wsrm::HandlerFuture<'_> {
        if let Ok(mut l) = self.log.lock() {
            l.push((
                self.sequence.clone(),
                d.number,
                String::from_utf8_lossy(&d.body).to_string(),
            ));
        }
        Box::pin(async { wsrm::Outcome::NoReply })
    }
}

/// Runs the demo.
pub fn run(args: Args) -> anyhow::Result<u8> {
    common::init_tracing();
    if args.rm == RmArg::Auto {
        return common::usage("--rm: choose 1.0 or 1.1");
    }
    if args.durable {
        return durable(&args);
    }
    let binding = common::binding(
        args.rm,
        common::SoapArg::V12,
        common::AddressingArg::V10,
        false,
    )
    .max_transfer_window_size(args.window)
    .send_timeout(std::time::Duration::from_secs(600));
    if let Err(e) = binding.validate() {
        return common::usage(e);
    }
    common::block_on(async move {
        let log: Arc<Mutex<Vec<(String, u64, String)>>> = Arc::default();
        let l = log.clone();
        let svc = wsrm::Service::builder(binding.clone())
            .handler(move |info: &wsrm::SessionInfo| Record {
                log: l.clone(),
                sequence: info.sequence.to_string(),
            })
            .bind(([127, 0, 0, 1], 0).into())
            .await?;
        let mut pc = wsrm::ProxyConfig::from_url(&svc.url(""))?;
        pc.drop_requests = args.drop;
        pc.duplicate = args.dup;
        pc.reorder = args.reorder;
        pc.seed = args.seed;
        if let Err(e) = pc.validate() {
            return common::usage(e);
        }
        let proxy = wsrm::Proxy::spawn(([127, 0, 0, 1], 0).into(), pc).await?;
        println!(
            "wsrm demo: {} messages through a lossy SOAP intermediary",
            args.count
        );
        println!(
            "  service  {}  (WS-RM {}, {}, ordered, window {})",
            svc.url("/svc"),
            binding.session.reliable_messaging_version,
            binding.message_version,
            args.window
        );
        println!(
            "  proxy    {}  (drop {:.0} %, duplicate {:.0} %, reorder {:.0} %, seed {})",
            proxy.url("/svc"),
            args.drop * 100.0,
            args.dup * 100.0,
            args.reorder * 100.0,
            args.seed
        );
        let started = Instant::now();
        let client = wsrm::Client::open(&proxy.url("/svc"), &binding, Default::default()).await?;
        let bar = if std::io::stderr().is_terminal() {
            indicatif::ProgressBar::new(args.count)
        } else {
            indicatif::ProgressBar::hidden()
        };
        let limit = args.window as usize * 2;
        let mut inflight = std::collections::VecDeque::new();
        let mut failed = 0u64;
        for i in 1..=args.count {
            let body = common::payload_for(&format!("message-{i}"));
            inflight.push_back(client.start_send(common::ONE_WAY_ACTION, body));
            if inflight.len() >= limit {
                if let Some(p) = inflight.pop_front() {
                    failed += u64::from(p.await.is_err());
                    bar.inc(1);
                }
            }
        }
        while let Some(p) = inflight.pop_front() {
            failed += u64::from(p.await.is_err());
            bar.inc(1);
        }
        bar.finish_and_clear();
        let closed = client.close().await;
        let elapsed = started.elapsed();
        let cs = client.stats();
        let ps = proxy.stats();
        let got = log.lock().map(|l| l.clone()).unwrap_or_default();
        let expected: Vec<String> = (1..=args.count)
            .map(|i| common::payload_for(&format!("message-{i}")))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let duplicates = got
            .iter()
            .filter(|(_, _, b)| !seen.insert(b.clone()))
            .count();
        let missing = expected.iter().filter(|b| !seen.contains(*b)).count();
        let bodies: Vec<&String> = got.iter().map(|(_, _, b)| b).collect();
        let in_order = bodies.len() == expected.len()
            && bodies.iter().zip(expected.iter()).all(|(a, b)| *a == b);
        let sessions: std::collections::HashSet<&String> = got.iter().map(|(s, _, _)| s).collect();
        println!();
        println!("  {:<44} {:>8}", "", "count");
        let row = |k: &str, v: u64| println!("  {k:<44} {v:>8}");
        row("client: messages sent", args.count);
        row("client: retransmissions", cs.retransmitted);
        row("client: messages acknowledged", args.count - failed);
        row("intermediary: exchanges", ps.exchanges);
        row("intermediary: requests dropped", ps.dropped_requests);
        row("intermediary: responses dropped", ps.dropped_responses);
        row("intermediary: requests duplicated", ps.duplicated);
        row("intermediary: requests held and reordered", ps.reordered);
        row("service: sessions", sessions.len() as u64);
        row("service: messages delivered", got.len() as u64);
        row("service: duplicates delivered", duplicates as u64);
        row("service: messages missing", missing as u64);
        println!(
            "  {:<44} {:>8}",
            "service: delivered in send order",
            if in_order { "yes" } else { "NO" }
        );
        println!("  {:<44} {:>8.1}", "elapsed (s)", elapsed.as_secs_f64());
        println!();
        let ok = in_order && duplicates == 0 && missing == 0 && failed == 0 && closed.is_ok();
        if ok {
            println!("result: every message delivered exactly once and in order");
            Ok(common::EXIT_OK)
        } else {
            if let Err(e) = closed {
                eprintln!("wsrm: error: session did not close cleanly: {e}");
            }
            println!("result: FAILED");
            Ok(common::EXIT_FAILED)
        }
    })?
}

/// Complete lines in a file (0 if it does not exist).
fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// `wsrm demo --durable`: real processes, real SIGKILLs.
fn durable(args: &Args) -> anyhow::Result<u8> {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;
    let exe = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("wsrm-demo-durable-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let input: String = (1..=args.count).map(|i| format!("message-{i}\n")).collect();
    std::fs::write(dir.join("input.txt"), input)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}/svc");
    let rm = if args.rm == RmArg::V11 { "1.1" } else { "1.0" };
    let delivered = dir.join("delivered.jsonl");
    let serve = || -> anyhow::Result<Child> {
        for _ in 0..100 {
            let mut c = Command::new(&exe)
                .current_dir(&dir)
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .args([
                    "--store",
                    "sqlite:service.db",
                    "--deliver-to",
                    "delivered.jsonl",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(c);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        anyhow::bail!("wsrm serve does not start")
    };
    let send = || -> anyhow::Result<Child> {
        Ok(Command::new(&exe)
            .current_dir(&dir)
            .args(["send", &url, "--lines", "input.txt", "--rm", rm])
            .args(["--store", "sqlite:sender.db", "--resume"])
            .args(["--window", &args.window.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    };
    let wait_for = |n: usize, sender: &mut Child| -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(120);
        while lines_in(&delivered) < n {
            if sender.try_wait()?.is_some() || Instant::now() > until {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    };
    println!(
        "wsrm demo --durable: {} messages, sender and service on SQLite stores in {}",
        args.count,
        dir.display()
    );
    let started = Instant::now();
    let mut service = serve()?;
    let mut sender = send()?;
    let third = (args.count / 3) as usize;
    wait_for(third, &mut sender)?;
    service.kill()?;
    service.wait()?;
    println!(
        "  SIGKILL service after {:>6} delivered; restarting it on its store",
        lines_in(&delivered)
    );
    service = serve()?;
    wait_for(2 * third, &mut sender)?;
    sender.kill()?;
    sender.wait()?;
    println!(
        "  SIGKILL sender  after {:>6} delivered; restarting it with --resume",
        lines_in(&delivered)
    );
    sender = send()?;
    let status = sender.wait()?;
    service.kill()?;
    service.wait()?;
    let text = std::fs::read_to_string(&delivered).unwrap_or_default();
    let mut bodies = Vec::new();
    let mut sequences = std::collections::HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        bodies.push(v["body"].as_str().unwrap_or("").to_string());
        sequences.insert(v["sequence"].as_str().unwrap_or("").to_string());
    }
    let expected: Vec<String> = (1..=args.count)
        .map(|i| common::payload_for(&format!("message-{i}")))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let duplicates = bodies.iter().filter(|b| !seen.insert((*b).clone())).count();
    let missing = expected.iter().filter(|b| !seen.contains(*b)).count();
    let in_order = bodies == expected;
    println!();
    let row = |k: &str, v: String| println!("  {k:<44} {v:>8}");
    row(
        "sender: final run exit code",
        format!("{}", status.code().unwrap_or(-1)),
    );
    row("service: sessions", sequences.len().to_string());
    row("service: messages delivered", bodies.len().to_string());
    row("service: duplicates delivered", duplicates.to_string());
    row("service: messages missing", missing.to_string());
    row(
        "service: delivered in send order",
        (if in_order { "yes" } else { "NO" }).to_string(),
    );
    row(
        "elapsed (s)",
        format!("{:.1}", started.elapsed().as_secs_f64()),
    );
    println!();
    let ok = status.success() && in_order && duplicates == 0 && missing == 0;
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
        println!("result: two crashes, every message delivered exactly once and in order");
        Ok(common::EXIT_OK)
    } else {
        println!("result: FAILED (files kept in {})", dir.display());
        Ok(common::EXIT_FAILED)
    }
}
