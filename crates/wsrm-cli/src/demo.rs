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

Examples:
  wsrm demo
  wsrm demo --count 200 --rm 1.1 --seed 7

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
