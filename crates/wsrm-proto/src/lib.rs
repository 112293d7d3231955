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
//!
//! ## API (modelled on quinn-proto: deterministic core, `handle_*` / `poll_*`)
//!
//! Time is a [`std::time::Instant`] passed in as `now`; identifiers (`urn:uuid:` GUIDs for
//! sequence ids and `wsa:MessageID`s) come from an RNG seeded at construction, so runs are
//! reproducible. Nothing panics on peer input: violations become the fault WCF sends
//! ([`msg::Fault`], e.g. `InvalidAcknowledgement`, `UnknownSequence`) and typed
//! [`SessionError`]s.
//!
//! ### Settings
//! [`Settings`] carries WCF's eight settings with WCF's defaults (AcknowledgementInterval
//! 200 ms, FlowControlEnabled true, InactivityTimeout 10 min, MaxPendingChannels 4,
//! MaxRetryCount 8, MaxTransferWindowSize 8, Ordered true, version 2005/02);
//! [`Settings::validate`] rejects out-of-range values with a [`SettingsError`] naming the
//! setting and the allowed range.
//!
//! ### Client (initiator): [`ClientSession`]
//! * `ClientSession::new(now, ClientConfig::new(pattern, shape), seed)` queues the
//!   CreateSequence (Offer for [`Pattern::RequestReply`] and [`Pattern::Duplex`]); it is re-sent
//!   with the same MessageID every 10 s until `open_timeout` (default 60 s).
//! * `send(now, action, payload) -> Result<u64, SendError>`: one-way message; the `u64` is its
//!   message number (numbers are assigned FIFO from 1, so it is known at once).
//! * `request(now, action, payload) -> Result<u64, SendError>`: two-way request
//!   (request-reply pattern); retransmitted until its reply arrives.
//! * `close(now)`, `abort(now)`.
//! * `handle_message(now, Message)`: every inbound message, including HTTP response bodies
//!   (an empty 202 response needs no call).
//! * `handle_timeout(now)`, `poll_timeout() -> Option<Instant>`.
//! * `poll_transmit(now) -> Option<Message>`: for [`Shape::RequestReply`] each message is one
//!   HTTP request; feed its response (if any) back through `handle_message`. `message.to` is
//!   `ClientConfig::remote_address` (or `None` for the runtime to fill).
//! * `poll_event() -> Option<ClientEvent>`: `Opened`, `Acknowledged{number}`,
//!   `Reply{request, number, action, payload}`, `Delivered{..}` (duplex inbound), `Closed`,
//!   `Failed{error, unacknowledged}` — `unacknowledged` lists exactly the numbers not
//!   acknowledged (requests: not replied). Inbound messages count as taken by the application
//!   when their event is produced (client BufferRemaining is not advertised over HTTP).
//! * `stats() -> SessionStats` (sent, retransmitted, acknowledged, duplicates dropped,
//!   delivered, dropped, window size, RTT), `state()`, `output_id()`, `input_id()`.
//!
//! ### Server (responder): [`Endpoint`]
//! * `Endpoint::new(EndpointConfig, seed)`: which patterns and versions it accepts,
//!   MaxPendingChannels (in `settings`), `max_sessions`, parked-exchange limit and timeout.
//! * `handle_message(now, Message, Option<ExchangeId>)`: `Some(ex)` = the message came on HTTP
//!   request `ex`; `None` = duplex transport. Sessions are demultiplexed by identifier;
//!   unknown identifiers get `UnknownSequence`. A CreateSequence with Offer on an exchange makes
//!   a request-reply session, with Offer and no exchange a duplex session, without Offer a
//!   one-way session.
//! * `poll_transmit(now) -> Option<ServerTransmit{exchange, session, message}>`: every exchange
//!   gets exactly one answer (`message: None` = empty 202): dropped messages, superseded
//!   duplicate requests, parked requests past `parked_exchange_timeout`, and requests whose
//!   session ended included. `exchange: None` = a one-way message to the session's peer
//!   (`message.to` = the CS ReplyTo, `None` when anonymous).
//! * `poll_event() -> Option<ServerEvent>`: `SessionCreated`, `Delivery{session, number,
//!   action, payload, reply: Option<ReplyToken>}`, `Acknowledged` (duplex outbound),
//!   `SessionClosed`, `SessionFailed{error, unacknowledged}`.
//! * `accept(session)` (MaxPendingChannels counts sessions created but not accepted),
//!   `delivered(session, number)` (the application took the message: BufferRemaining =
//!   MaxTransferWindowSize − delivered-but-not-released − held out of order),
//!   `reply(now, token, action, payload)` / `reply_none(now, token)` (request-reply; the reply
//!   is cached until the client acknowledges it and replayed for a retransmitted request),
//!   `send(now, session, action, payload)` / `close_session(now, session, timeout)` (duplex
//!   outbound), `abort_session(now, session)`, `stats(session)`.
//! * `handle_timeout(now)`, `poll_timeout()`: a timer heap, cost proportional to due sessions.
//!
//! ### Simulator: [`sim`]
//! A deterministic network simulator (seeded RNG, virtual time, loss, duplication, reordering,
//! delay distributions, partitions, asymmetric loss) that drives a [`ClientSession`] and an
//! [`Endpoint`] through the three patterns and checks exactly-once (and in-order) delivery.
#![forbid(unsafe_code)]
// `Fault` (shared vocabulary, msg.rs) is ~136 bytes; faults are the rare path, so internal
// `Result<_, Fault>` / `Result<_, SessionError>` are kept unboxed.
#![allow(clippy::result_large_err)]
#![warn(missing_docs)]

pub mod client;
mod dest;
mod inbound;
pub mod msg;
mod outbound;
pub mod ranges;
pub mod server;
pub mod settings;
pub mod sim;
pub mod snapshot;
mod source;
pub mod types;

pub use client::{ClientConfig, ClientSession};
pub use server::{Endpoint, EndpointConfig};
pub use settings::{Settings, SettingsError};
pub use source::{SourceCounters, FAST_RETRIES};
pub use types::*;
