//! Shared pieces of the engine's test harnesses.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use wsrm_proto::{ClientSession, Endpoint};

/// Moves virtual time to the earlier of both endpoints' deadlines (at least 1 ms on, 10 ms
/// when neither has one) and runs their timers.
pub fn advance(now: &mut Instant, client: &mut ClientSession, ep: &mut Endpoint) {
    let t = [client.poll_timeout(), ep.poll_timeout()]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(*now + Duration::from_millis(10));
    *now = t.max(*now + Duration::from_millis(1));
    client.handle_timeout(*now);
    ep.handle_timeout(*now);
}

/// The answer the endpoint queued for HTTP exchange `ex` (after it handled that exchange's
/// message and its events), draining every other transmit.
pub fn answer_of(
    ep: &mut Endpoint,
    now: Instant,
    ex: wsrm_proto::ExchangeId,
) -> Option<wsrm_proto::msg::Message> {
    let mut answer = None;
    while let Some(t) = ep.poll_transmit(now) {
        if t.exchange == Some(ex) {
            answer = t.message;
        }
    }
    answer
}

/// The number of cases a property test runs: `default`, or `PROPTEST_CASES` when that is set
/// (a test's own `ProptestConfig` would otherwise override the variable), so that a deeper
/// search can be run by hand, e.g. `PROPTEST_CASES=100000 cargo test --release --test NAME`.
/// An unreadable value is an error, not a silent default.
pub fn cases(default: u32) -> u32 {
    match std::env::var("PROPTEST_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("PROPTEST_CASES={v:?} is not a number of cases")),
        Err(_) => default,
    }
}
