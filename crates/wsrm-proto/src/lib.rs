//! # wsrm-proto — the sans-IO WS-ReliableMessaging engine
//!
//! Owns: the RM Source and RM Destination state machines for WS-RM 1.0 (February 2005) and 1.1
//! as WCF implements them (windows, retransmission, RTT estimation, acknowledgements, flow
//! control, keep-alive, closing, faults, timers), the request-reply and duplex session patterns,
//! WCF's reliable-session settings, and a deterministic network simulator used as the main test
//! harness.
//!
//! Does not own: sockets, clocks, async runtimes or XML. Time and input go in
//! (`handle_*`), messages to send, the next deadline and deliveries come out (`poll_*`).
//! The codec (`wsrm-wire`) maps [`msg::Message`] values to and from SOAP envelopes; the runtime
//! (`wsrm`) moves them over HTTP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod msg;
