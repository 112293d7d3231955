//! Public value types shared by the client and server engines: transport shape, session
//! pattern, counters, errors and events.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::msg::{Fault, FaultKind, SequenceId};

/// WS-Addressing 1.0 anonymous URI (the local address of a non-addressable HTTP client).
pub const WSA10_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";

/// WCF's `RequestorReceiveTime`: CreateSequence / CloseSequence / TerminateSequence are re-sent
/// every 10 s until answered.
pub const REQUESTOR_RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// The earlier of two optional deadlines (`None` = no deadline).
#[inline]
pub(crate) fn earliest(
    a: Option<std::time::Instant>,
    b: Option<std::time::Instant>,
) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// How the underlying transport moves messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// HTTP request/reply: the initiator is non-addressable; every message it sends is an HTTP
    /// request that gets exactly one response (a message, or empty = HTTP 202).
    RequestReply,
    /// Messages flow freely in both directions (TCP, composite-duplex HTTP).
    Duplex,
}

/// Which message exchange pattern a session uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// One sequence, no Offer.
    OneWay,
    /// Request sequence plus reply sequence created through Offer; replies ride HTTP responses
    /// (wire-protocol.md §4.11).
    RequestReply,
    /// Two independent sequences paired through Offer (§4.12).
    Duplex,
}

impl Pattern {
    /// Short name: `one-way`, `request-reply`, `duplex`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::OneWay => "one-way",
            Pattern::RequestReply => "request-reply",
            Pattern::Duplex => "duplex",
        }
    }
}

/// Per-session counters (readable at any time through `stats()`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Outbound sequence messages transmitted for the first time.
    pub sent: u64,
    /// Outbound retransmissions.
    pub retransmitted: u64,
    /// Outbound messages acknowledged (two-way requests: replied).
    pub acknowledged: u64,
    /// Inbound duplicates dropped.
    pub duplicates_dropped: u64,
    /// Inbound messages delivered to the application.
    pub delivered: u64,
    /// Inbound messages dropped unacknowledged (buffer full, out of order, range cap).
    pub dropped: u64,
    /// Current congestion window.
    pub window_size: u32,
    /// Smoothed round-trip time.
    pub rtt: Duration,
}

/// Why a session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A message would have exceeded 1 + MaxRetryCount transmissions (SequenceTerminated,
    /// Receiver, was sent to the peer).
    #[error("maximum retry count exceeded for message {number}")]
    RetryExhausted {
        /// The message that could not be delivered.
        number: u64,
    },
    /// Request `number` was acknowledged, but its reply did not come within 1 + MaxRetryCount
    /// transmissions: the service took the request and answers its copies without a reply.
    /// Either its operation is one-way (or its handler gave no reply), or the reply was lost
    /// on the way and the service keeps no copy to send again (gSOAP, for one; WCF, CXF and
    /// wsrm resend a cached reply for a duplicate request). A SequenceTerminated fault was
    /// sent to the peer.
    #[error("request {number} was acknowledged but no reply came after the maximum retry count (is the service's operation one-way, or did it lose the reply and keep no copy to resend?)")]
    NoReply {
        /// The request.
        number: u64,
    },
    /// The destination refused message `number` for its size (HTTP 413): it can never be
    /// transferred, and the sequence cannot complete without it. A SequenceTerminated fault
    /// (WCF's QuotaExceeded) was sent to the peer.
    #[error("message {number} is larger than the destination accepts")]
    MessageTooLarge {
        /// The message.
        number: u64,
    },
    /// The reply to request `number` exceeded this endpoint's maximum message size, so the
    /// request can never be answered. A SequenceTerminated fault (WCF's QuotaExceeded) was
    /// sent to the peer.
    #[error("the reply to request {number} is larger than this endpoint accepts")]
    ReplyTooLarge {
        /// The request.
        number: u64,
    },
    /// Nothing arrived from the peer for InactivityTimeout.
    #[error("inactivity timeout exceeded")]
    InactivityTimeout,
    /// The CreateSequence handshake did not complete within the open timeout.
    #[error("CreateSequence was not answered within the open timeout")]
    OpenTimeout,
    /// Close/Terminate did not complete within the close timeout.
    #[error("close did not complete within the close timeout")]
    CloseTimeout,
    /// The destination refused the CreateSequence.
    #[error("session refused: {}", .0.reason)]
    Refused(Fault),
    /// The peer sent a fault that ends the session.
    #[error("peer fault {}: {}", .0.kind, .0.reason)]
    RemoteFault(Fault),
    /// The peer violated the protocol; this fault was sent to it.
    #[error("protocol violation {}: {}", .0.kind, .0.reason)]
    ProtocolViolation(Fault),
    /// The local application aborted the session.
    #[error("session aborted")]
    Aborted,
}

impl SessionError {
    /// The fault involved, if any.
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            SessionError::Refused(f)
            | SessionError::RemoteFault(f)
            | SessionError::ProtocolViolation(f) => Some(f),
            _ => None,
        }
    }

    /// The fault kind involved (local failures map to SequenceTerminated as WCF sends it).
    pub fn fault_kind(&self) -> FaultKind {
        match self.fault() {
            Some(f) => f.kind.clone(),
            None => FaultKind::SequenceTerminated,
        }
    }
}

/// Why a local send/request/close call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session is closing, closed or failed.
    #[error("the session no longer accepts messages")]
    NotOpen,
    /// The operation does not exist in this session's pattern (e.g. `request` on one-way).
    #[error("operation not available in the {0} pattern")]
    WrongPattern(&'static str),
    /// The sequence would exceed 2^63 − 1 messages (local MessageNumberRollover).
    #[error("message number rollover")]
    Rollover,
    /// Unknown session (server side).
    #[error("unknown session")]
    UnknownSession,
}

/// Client-side session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// CreateSequence sent, waiting for the response.
    Connecting,
    /// Sequence(s) established.
    Open,
    /// `close()` called; finishing.
    Closing,
    /// Closed cleanly.
    Closed,
    /// Failed (see the `Failed` event).
    Failed,
}

/// What the client engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The CreateSequence handshake completed.
    Opened {
        /// The outbound sequence (from the CreateSequenceResponse).
        output: SequenceId,
        /// The inbound sequence (the offered one), if any.
        input: Option<SequenceId>,
    },
    /// An outbound one-way message was acknowledged.
    Acknowledged {
        /// Its message number (as returned by `send`).
        number: u64,
    },
    /// The reply to a request arrived (delivered exactly once).
    Reply {
        /// The request's number (as returned by `request`).
        request: u64,
        /// The reply's number on the reply sequence.
        number: u64,
        /// Reply action.
        action: Arc<str>,
        /// Reply body content.
        payload: Bytes,
    },
    /// A message on the inbound duplex sequence was delivered (exactly once; in order when
    /// Ordered).
    Delivered {
        /// Its message number.
        number: u64,
        /// Action.
        action: Arc<str>,
        /// Body content.
        payload: Bytes,
    },
    /// The session closed cleanly (every message acknowledged, sequences terminated).
    Closed,
    /// The session failed.
    Failed {
        /// Why.
        error: SessionError,
        /// Exactly the numbers (from `send`/`request`) that were not acknowledged (requests:
        /// not replied).
        unacknowledged: Vec<u64>,
    },
}

/// Identifies one session inside an [`crate::server::Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Identifies one HTTP exchange (request awaiting its response); chosen by the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExchangeId(pub u64);

/// Handle for answering a request-reply delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyToken {
    /// The session.
    pub session: SessionId,
    /// The request's number on the request sequence.
    pub request: u64,
}

/// Something for the server runtime to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTransmit {
    /// `Some`: the answer to that HTTP exchange (exactly one per exchange). `None`: a one-way
    /// message to the session's peer (Duplex shape; address = the CS ReplyTo).
    pub exchange: Option<ExchangeId>,
    /// The session concerned, if any.
    pub session: Option<SessionId>,
    /// The message; `None` = empty HTTP 202.
    pub message: Option<crate::msg::Message>,
}

/// What the server engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A CreateSequence was accepted; the session counts against MaxPendingChannels until
    /// `accept`.
    SessionCreated {
        /// The session.
        session: SessionId,
        /// Its pattern.
        pattern: Pattern,
        /// Its RM version.
        version: crate::msg::RmVersion,
        /// The inbound sequence id.
        input: SequenceId,
        /// The outbound (offered) sequence id, if any.
        output: Option<SequenceId>,
    },
    /// An inbound message for the application (exactly once; in order when Ordered). Call
    /// `delivered(session, number)` when the application has taken it.
    Delivery {
        /// The session.
        session: SessionId,
        /// Message number.
        number: u64,
        /// Action.
        action: Arc<str>,
        /// Body content.
        payload: Bytes,
        /// Request-reply: answer with `reply` (or `reply_none` for a one-way operation).
        reply: Option<ReplyToken>,
    },
    /// An outbound duplex message was acknowledged.
    Acknowledged {
        /// The session.
        session: SessionId,
        /// Its number (as returned by `send`).
        number: u64,
    },
    /// The session ended cleanly.
    SessionClosed {
        /// The session.
        session: SessionId,
    },
    /// The session failed.
    SessionFailed {
        /// The session.
        session: SessionId,
        /// Why.
        error: SessionError,
        /// Outbound numbers not acknowledged (duplex).
        unacknowledged: Vec<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::SessionError;

    /// `interop/run` (`failed_message`, tested by `interop/test_run.py`) tells which message a
    /// wsrm client gave up on from these texts, to recognise a peer's known limitation. A change
    /// here must change the runner too, or a cell that loses a reply to gSOAP turns into a FAIL.
    #[test]
    fn the_retry_errors_keep_the_texts_the_interop_runner_reads() {
        assert_eq!(
            SessionError::RetryExhausted { number: 158 }.to_string(),
            "maximum retry count exceeded for message 158"
        );
        assert!(SessionError::NoReply { number: 158 }
            .to_string()
            .starts_with(
                "request 158 was acknowledged but no reply came after the maximum retry count"
            ));
    }
}
