//! `wsrm proxy`: the fault-injecting HTTP SOAP intermediary.

use std::net::SocketAddr;
use std::time::Duration;

use clap::ValueEnum;

use crate::common;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DropModeArg {
    /// Answer `502 Bad Gateway` with an empty body (default; clients retry at once).
    #[value(name = "502")]
    BadGateway,
    /// Close the connection without a response.
    Close,
}

const HELP: &str = "\
Every decision comes from one random generator seeded with --seed, drawn in arrival order:
the same seed and the same traffic give the same faults. On SIGINT or SIGTERM the proxy prints
what it did and exits.

A dropped request never reaches the service; a dropped response reached the service but not the
client. Both are answered at once with 502 and an empty body (or a closed connection with
--drop-mode close), which a reliable-session client treats as a lost message.

Examples:
  wsrm proxy --listen 127.0.0.1:8081 --to http://127.0.0.1:8080
  wsrm proxy --listen 127.0.0.1:8081 --to http://127.0.0.1:8080 \\
      --drop 0.2 --drop-responses 0.05 --dup 0.1 --reorder 0.1 --delay 0..5ms --seed 7

Exit codes: 0 stopped by SIGINT/SIGTERM; 1 runtime failure; 2 bad arguments (a probability
outside 0..1, a bad URL, an address in use).";

/// Forward HTTP SOAP exchanges to a service, dropping, duplicating, reordering and delaying
/// them on purpose.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Service base URL (http). A request for /p goes to URL/p.
    #[arg(long, value_name = "URL")]
    to: String,
    /// Probability of dropping a request (the service never sees it).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    drop: f64,
    /// Probability of dropping a response (the service saw the request).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    drop_responses: f64,
    /// Probability of forwarding a request twice.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    dup: f64,
    /// Probability of holding a request and forwarding it after 1-3 later ones.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    reorder: f64,
    /// Delay every exchange by a random time in MIN..MAX (e.g. 0..5ms, 10ms..1s).
    #[arg(long, value_name = "MIN..MAX")]
    delay: Option<String>,
    /// Seed of the decision generator.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// How a dropped request or response is signalled to the client.
    #[arg(long, value_enum, default_value = "502")]
    drop_mode: DropModeArg,
    /// Longest time (ms) a held request waits for later ones.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    reorder_hold_ms: u64,
}

/// Runs the proxy until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<u8> {
    common::init_tracing();
    let mut cfg = match wsrm::ProxyConfig::from_url(&args.to) {
        Ok(c) => c,
        Err(e) => return common::usage(e),
    };
    cfg.drop_requests = args.drop;
    cfg.drop_responses = args.drop_responses;
    cfg.duplicate = args.dup;
    cfg.reorder = args.reorder;
    cfg.seed = args.seed;
    cfg.reorder_hold = Duration::from_millis(args.reorder_hold_ms);
    cfg.drop_mode = match args.drop_mode {
        DropModeArg::BadGateway => wsrm::DropMode::BadGateway,
        DropModeArg::Close => wsrm::DropMode::Close,
    };
    if let Some(d) = &args.delay {
        match wsrm::proxy::parse_delay(d) {
            Ok(r) => cfg.delay = Some(r),
            Err(e) => return common::usage(format!("--delay: {e}")),
        }
    }
    if let Err(e) = cfg.validate() {
        return common::usage(e);
    }
    common::block_on(async move {
        let to = cfg.to.clone();
        let handle = match wsrm::Proxy::spawn(args.listen, cfg).await {
            Ok(h) => h,
            Err(e) => return common::usage(e),
        };
        println!("listening on http://{} -> {}", handle.local_addr(), to);
        common::terminated().await;
        let stats = handle.shutdown().await;
        println!("proxy: {stats}");
        Ok(common::EXIT_OK)
    })?
}
