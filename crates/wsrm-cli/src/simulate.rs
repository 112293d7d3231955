//! `wsrm simulate`: many seeded runs of the protocol engine over a lossy virtual link.

use std::time::Duration;

use anyhow::bail;
use wsrm_proto::msg::RmVersion;
use wsrm_proto::sim::{self, SimConfig, Summary};
use wsrm_proto::Pattern;

/// Run N deterministic simulations (virtual time) of a client and a service over a lossy link
/// and check exactly-once (and in-order) delivery.
///
/// Prints one line per failing seed and a final line
/// `runs=N delivered_exactly_once=N in_order=N lost=0 duplicated=0 failed_sessions=K`.
/// Exit 0 only when no run lost or duplicated a message (and, when ordered, none delivered out
/// of order); 1 otherwise; 2 on bad arguments.
///
/// Example: `wsrm simulate --seeds 10000 --loss 0.3 --dup 0.1 --reorder 0.2 --pattern duplex --rm 1.1 --max-retries 40`
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of seeded runs (seeds start..start+N).
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    seed_start: u64,
    /// Application messages per run (the duplex service echoes each back).
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Loss probability client → service.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Loss probability service → client (acks, replies); default: same as --loss.
    #[arg(long)]
    ack_loss: Option<f64>,
    /// Duplication probability.
    #[arg(long, default_value_t = 0.0)]
    dup: f64,
    /// Reordering probability (extra delay up to 50 ms).
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// WS-RM version.
    #[arg(long, default_value = "1.0", value_parser = ["1.0", "1.1"])]
    rm: String,
    /// Ordered delivery.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ordered: bool,
    /// Exchange pattern.
    #[arg(long, default_value = "one-way", value_parser = ["one-way", "request-reply", "duplex"])]
    pattern: String,
    /// MaxTransferWindowSize (default 8).
    #[arg(long)]
    window: Option<u32>,
    /// MaxRetryCount (default 8).
    #[arg(long)]
    max_retries: Option<u32>,
    /// Link down for this many milliseconds, starting 200 ms into the run.
    #[arg(long)]
    partition_ms: Option<u64>,
    /// Worker threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn probability(name: &str, p: f64) -> anyhow::Result<f64> {
    if !(0.0..=1.0).contains(&p) {
        bail!("--{name} must be between 0 and 1, got {p}");
    }
    Ok(p)
}

/// Runs the command; returns the exit code.
pub fn run(args: Args) -> anyhow::Result<u8> {
    match run_inner(args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("wsrm simulate: {e:#}");
            Ok(2)
        }
    }
}

fn run_inner(args: Args) -> anyhow::Result<u8> {
    let pattern = match args.pattern.as_str() {
        "request-reply" => Pattern::RequestReply,
        "duplex" => Pattern::Duplex,
        _ => Pattern::OneWay,
    };
    let mut cfg = SimConfig::new(pattern);
    cfg.messages = args.messages;
    cfg.settings.reliable_messaging_version = if args.rm == "1.1" {
        RmVersion::Wsrm11
    } else {
        RmVersion::Wsrm10
    };
    cfg.settings.ordered = args.ordered;
    if let Some(w) = args.window {
        cfg.settings.max_transfer_window_size = w;
    }
    if let Some(r) = args.max_retries {
        cfg.settings.max_retry_count = r;
    }
    cfg.settings.validate()?;
    cfg.link.loss = probability("loss", args.loss)?;
    cfg.link.reverse_loss = probability("ack-loss", args.ack_loss.unwrap_or(args.loss))?;
    cfg.link.dup = probability("dup", args.dup)?;
    cfg.link.reorder = probability("reorder", args.reorder)?;
    cfg.link.partition = args.partition_ms.map(Duration::from_millis);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let start = args.seed_start;
    let end = start.saturating_add(args.seeds);
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                let cfg = &cfg;
                scope.spawn(move || {
                    let mut v = Vec::new();
                    let mut seed = start + t;
                    while seed < end {
                        v.push(sim::run(cfg, seed));
                        seed += threads as u64;
                    }
                    v
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            if let Ok(v) = h.join() {
                all.extend(v);
            }
        }
        all
    });
    let mut outcomes = outcomes;
    outcomes.sort_by_key(|o| o.seed);
    let mut summary = Summary::default();
    for o in &outcomes {
        summary.add(o);
        if !o.ok() || o.failed_session {
            let mut what: Vec<String> = o.problems.iter().take(5).cloned().collect();
            if o.problems.len() > 5 {
                what.push(format!("(+{} more)", o.problems.len() - 5));
            }
            if o.failed_session {
                what.push(format!(
                    "session failed (client: {}; service: {})",
                    o.client_end,
                    if o.server_end.is_empty() {
                        "open"
                    } else {
                        &o.server_end
                    }
                ));
            }
            println!("seed={}: {}", o.seed, what.join("; "));
        }
    }
    if summary.runs != args.seeds {
        bail!("only {} of {} runs completed", summary.runs, args.seeds);
    }
    println!("{}", summary.line());
    let bad = summary.lost > 0
        || summary.duplicated > 0
        || (args.ordered && summary.in_order != summary.runs)
        || outcomes.iter().any(|o| {
            !o.problems.is_empty() && o.lost == 0 && o.duplicated == 0 && o.out_of_order == 0
        });
    Ok(u8::from(bad))
}
