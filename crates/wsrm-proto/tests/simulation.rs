//! Simulation tests: thousands of seeded runs per pattern and version over a lossy, duplicating,
//! reordering link. Every run must deliver every message exactly once (in order when Ordered),
//! and with a retry budget sized for the link no session may fail.

use std::time::Duration;

use wsrm_proto::msg::RmVersion;
use wsrm_proto::sim::{run, SimConfig, Summary};
use wsrm_proto::Pattern;

const SEEDS: u64 = 2000;

fn sweep(pattern: Pattern, version: RmVersion, ordered: bool) -> Summary {
    let mut cfg = SimConfig::new(pattern);
    cfg.settings.reliable_messaging_version = version;
    cfg.settings.ordered = ordered;
    cfg.settings.max_retry_count = 40;
    cfg.messages = 12;
    cfg.link.loss = 0.2;
    cfg.link.reverse_loss = 0.2;
    cfg.link.dup = 0.1;
    cfg.link.reorder = 0.2;
    let mut s = Summary::default();
    for seed in 0..SEEDS {
        let o = run(&cfg, seed);
        assert!(
            o.ok(),
            "{pattern:?} {version} seed {seed}: {:?}",
            o.problems
        );
        assert!(
            !o.failed_session,
            "{pattern:?} {version} seed {seed}: {} / {}",
            o.client_end, o.server_end
        );
        s.add(&o);
    }
    s
}

fn expect_clean(s: Summary) {
    assert_eq!(
        s.line(),
        format!("runs={SEEDS} delivered_exactly_once={SEEDS} in_order={SEEDS} lost=0 duplicated=0 failed_sessions=0")
    );
}

#[test]
fn one_way_10_exactly_once_in_order() {
    expect_clean(sweep(Pattern::OneWay, RmVersion::Wsrm10, true));
}

#[test]
fn one_way_11_exactly_once_unordered() {
    expect_clean(sweep(Pattern::OneWay, RmVersion::Wsrm11, false));
}

#[test]
fn request_reply_10_exactly_once_in_order() {
    expect_clean(sweep(Pattern::RequestReply, RmVersion::Wsrm10, true));
}

#[test]
fn request_reply_11_exactly_once_in_order() {
    expect_clean(sweep(Pattern::RequestReply, RmVersion::Wsrm11, true));
}

#[test]
fn duplex_10_exactly_once_unordered() {
    expect_clean(sweep(Pattern::Duplex, RmVersion::Wsrm10, false));
}

#[test]
fn duplex_11_exactly_once_in_order() {
    expect_clean(sweep(Pattern::Duplex, RmVersion::Wsrm11, true));
}

/// A partition longer than the retry budget's patience still never loses a message: the
/// session either recovers or fails and reports exactly what was not acknowledged.
#[test]
fn partition_and_asymmetric_loss_never_lose_messages() {
    for pattern in [Pattern::OneWay, Pattern::RequestReply, Pattern::Duplex] {
        let mut cfg = SimConfig::new(pattern);
        cfg.messages = 20;
        cfg.link.loss = 0.05;
        cfg.link.reverse_loss = 0.4;
        cfg.link.partition = Some(Duration::from_secs(30));
        let mut s = Summary::default();
        for seed in 0..200 {
            let o = run(&cfg, seed);
            assert!(o.ok(), "{pattern:?} seed {seed}: {:?}", o.problems);
            s.add(&o);
        }
        assert_eq!(s.lost, 0);
        assert_eq!(s.duplicated, 0);
    }
}

/// With MaxRetryCount 1 and a link that drops every request, the session fails by retry
/// exhaustion and reports every message as unacknowledged — counted, never lost.
#[test]
fn retry_exhaustion_is_a_failed_session_not_a_loss() {
    let mut cfg = SimConfig::new(Pattern::OneWay);
    cfg.messages = 5;
    cfg.settings.max_retry_count = 1;
    cfg.link.partition = Some(Duration::from_secs(3600));
    cfg.link.partition_start = Duration::from_millis(20);
    let o = run(&cfg, 7);
    assert!(o.ok(), "{:?}", o.problems);
    assert!(o.failed_session);
    assert!(
        o.client_end.contains("maximum retry count"),
        "{}",
        o.client_end
    );
}

/// Same seed, same outcome.
#[test]
fn runs_are_deterministic() {
    let mut cfg = SimConfig::new(Pattern::Duplex);
    cfg.link.loss = 0.3;
    cfg.link.reverse_loss = 0.3;
    cfg.link.dup = 0.1;
    cfg.link.reorder = 0.2;
    cfg.settings.max_retry_count = 40;
    cfg.messages = 30;
    assert_eq!(run(&cfg, 42), run(&cfg, 42));
}
