use wsrm_proto::msg::RmVersion;
use wsrm_proto::sim::{run, SimConfig, Summary};
use wsrm_proto::Pattern;

#[test]
fn debug_run() {
    let n: u64 = std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    for pattern in [Pattern::OneWay, Pattern::RequestReply, Pattern::Duplex] {
        for v in [RmVersion::Wsrm10, RmVersion::Wsrm11] {
            for (loss, dup, re) in [(0.0, 0.0, 0.0), (0.3, 0.1, 0.2)] {
                let mut cfg = SimConfig::new(pattern);
                cfg.settings.reliable_messaging_version = v;
                cfg.settings.max_retry_count = 40;
                cfg.messages = 30;
                cfg.link.loss = loss;
                cfg.link.reverse_loss = loss;
                cfg.link.dup = dup;
                cfg.link.reorder = re;
                let mut s = Summary::default();
                for seed in 0..n {
                    let o = run(&cfg, seed);
                    if !o.ok() || o.failed_session {
                        eprintln!("{pattern:?} {v} loss={loss} seed={seed} {} / {} {:?}", o.client_end, o.server_end, &o.problems[..o.problems.len().min(3)]);
                    }
                    s.add(&o);
                }
                eprintln!("{pattern:?} {v} loss={loss}: {}", s.line());
            }
        }
    }
}
