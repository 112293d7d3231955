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
