use wsrm_proto::msg::RmVersion;
use wsrm_proto::sim::{run, SimConfig};
use wsrm_proto::Pattern;

#[test]
fn one() {
    let p = match std::env::var("PAT").as_deref() { Ok("rr") => Pattern::RequestReply, Ok("ow") => Pattern::OneWay, _ => Pattern::Duplex };
    let mut cfg = SimConfig::new(p);
    cfg.settings.reliable_messaging_version = if std::env::var("V11").is_ok() { RmVersion::Wsrm11 } else { RmVersion::Wsrm10 };
    cfg.settings.max_retry_count = std::env::var("R").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    cfg.messages = std::env::var("MSGS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let loss: f64 = std::env::var("LOSS").ok().and_then(|s| s.parse().ok()).unwrap_or(0.3);
    cfg.link.loss = loss;
    cfg.link.reverse_loss = loss;
    cfg.link.dup = std::env::var("DUP").ok().and_then(|s| s.parse().ok()).unwrap_or(0.1);
    cfg.link.reorder = std::env::var("RE").ok().and_then(|s| s.parse().ok()).unwrap_or(0.2);
    let seed = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let o = run(&cfg, seed);
    eprintln!("{o:?}");
}
