//! Snapshots for durable sessions: the plain data a runtime keeps in its store and hands back
//! to the engine after a restart ([`crate::ClientSession::resume`],
//! [`crate::Endpoint::restore_session`]).
//!
//! The engine stays sans-IO: it neither reads nor writes a store. The runtime records what the
//! engine did (messages first transmitted, acknowledgements, received messages, deliveries) and
//! rebuilds a snapshot from its store at startup. Only what a restarted session needs is kept:
//! the sequence identifiers, the numbering, the received ranges and the messages not yet
//! acknowledged (source) or not yet delivered (destination).
//!
//! ## Acknowledgements and durability
//! The engine acknowledges what it has been fed. A runtime that promises durability therefore
//! makes every received sequence message durable *before* it feeds it to the engine
//! (`Endpoint::handle_message`), and holds the answers of exchanges until the writes submitted
//! before them are durable; see `docs/engine.md` (*Durable sessions*).

use std::sync::Arc;

use bytes::Bytes;

use crate::msg::{Message, RmVersion, SequenceId};

/// One message of a snapshot: an unacknowledged outbound message to retransmit, or a received
/// message not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMessage {
    /// Message number.
    pub number: u64,
    /// `wsa:Action` (application actions; the 1.0 `LastMessage` action is not a snapshot
    /// message).
    pub action: Arc<str>,
    /// Body content.
    pub payload: Bytes,
    /// `wsa:MessageID` (two-way requests), if any.
    pub message_id: Option<Arc<str>>,
}

/// The outbound sequence of a client session, as stored (one-way and request-reply patterns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSnapshot {
    /// The sequence identifier (from the CreateSequenceResponse).
    pub id: SequenceId,
    /// Its RM version (must equal the configuration's).
    pub version: RmVersion,
    /// The number the next new message gets (1 + the highest number ever transmitted).
    pub next_number: u64,
    /// The messages transmitted and not acknowledged, ascending by number. Numbers between
    /// the lowest of them and `next_number` that are missing here count as acknowledged.
    /// Two-way requests carry their `message_id`; a request-reply runtime keeps a request
    /// stored until its reply was handed to the application, so a request listed here may
    /// already be acknowledged (it is retransmitted, and the service answers a retransmission
    /// with its cached reply) or already answered (its reply is in
    /// [`ReplySnapshot::undelivered`]; it is then not sent again).
    pub unacknowledged: Vec<SnapshotMessage>,
    /// Request-reply sessions: the offered reply sequence (`None` for one-way sessions).
    pub replies: Option<ReplySnapshot>,
}

/// The offered (reply) sequence of a request-reply client session, as stored.
///
/// A durable runtime stores each reply *before* it feeds it to the engine (the engine
/// acknowledges what it was fed, and an acknowledged reply is dropped from the service's reply
/// cache), and marks it delivered once the application has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySnapshot {
    /// The offered sequence identifier (minted by the client, accepted by the service).
    pub id: SequenceId,
    /// Every reply number received (and acknowledged), ascending inclusive ranges.
    pub ranges: Vec<(u64, u64)>,
    /// The last reply number, once known.
    pub last_number: Option<u64>,
    /// Every reply `1..=delivered_through` was handed to the application.
    pub delivered_through: u64,
    /// Received replies not yet handed to the application, ascending; `message_id` holds the
    /// reply's `wsa:RelatesTo` (the MessageID of the request it answers). The engine hands
    /// them out again as `Reply` events (in order when Ordered).
    pub undelivered: Vec<SnapshotMessage>,
}

/// A cached reply of a request-reply session, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReply {
    /// The request it answers.
    pub request_number: u64,
    /// Its number on the reply sequence.
    pub reply_number: u64,
    /// The reply message (with its sequence header), replayed for a retransmitted request.
    pub message: Message,
}

/// The inbound sequence of a server session, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestSnapshot {
    /// The sequence identifier (minted by this endpoint).
    pub id: SequenceId,
    /// RM version of the sequence.
    pub version: RmVersion,
    /// The peer's AcksTo / ReplyTo address (`None`: anonymous).
    pub acks_to: Option<Arc<str>>,
    /// The offered sequence replies go out on (request-reply sessions).
    pub reply_sequence: Option<SequenceId>,
    /// Whether the session runs over HTTP request/reply (the service's transport).
    pub http: bool,
    /// Every number received (and acknowledged), ascending inclusive ranges.
    pub ranges: Vec<(u64, u64)>,
    /// The last message number, once known.
    pub last_number: Option<u64>,
    /// Every message `1..=delivered_through` was delivered (committed by the application).
    pub delivered_through: u64,
    /// Received messages not yet delivered, ascending; the engine delivers them again
    /// (in order when Ordered) as `Delivery` events.
    pub undelivered: Vec<SnapshotMessage>,
    /// Request-reply: the number the next reply gets.
    pub next_reply_number: u64,
    /// Request-reply: replies not yet acknowledged by the client.
    pub cached_replies: Vec<SnapshotReply>,
}

impl DestSnapshot {
    /// A snapshot of a fresh one-way sequence (nothing received yet).
    pub fn new(id: SequenceId, version: RmVersion) -> Self {
        DestSnapshot {
            id,
            version,
            acks_to: None,
            reply_sequence: None,
            http: true,
            ranges: Vec::new(),
            last_number: None,
            delivered_through: 0,
            undelivered: Vec::new(),
            next_reply_number: 1,
            cached_replies: Vec::new(),
        }
    }
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The configuration is invalid.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// The snapshot's RM version differs from the configured one.
    #[error("the stored sequence uses {stored:?} but the configuration says {configured:?}")]
    VersionMismatch {
        /// Version in the snapshot.
        stored: RmVersion,
        /// Version configured.
        configured: RmVersion,
    },
    /// Duplex client sessions cannot be resumed; a request-reply session needs its reply
    /// sequence ([`SourceSnapshot::replies`]) and a one-way session must not have one.
    #[error("only one-way and request-reply sessions can be resumed, request-reply ones with their reply sequence")]
    UnsupportedPattern,
    /// The endpoint already has a session with this sequence identifier.
    #[error("a session for sequence {0} already exists")]
    Exists(SequenceId),
    /// The snapshot is inconsistent (numbers out of range or order, too many ranges).
    #[error("invalid snapshot: {0}")]
    Invalid(String),
}

/// Checks numbers are within 1..=2^63−1 and strictly ascending.
pub(crate) fn check_ascending(
    ms: &[SnapshotMessage],
    below: Option<u64>,
) -> Result<(), RestoreError> {
    let mut prev = 0;
    for m in ms {
        if m.number <= prev || m.number > crate::msg::MAX_MESSAGE_NUMBER {
            return Err(RestoreError::Invalid(format!(
                "message number {} out of order or range",
                m.number
            )));
        }
        if below.is_some_and(|b| m.number >= b) {
            return Err(RestoreError::Invalid(format!(
                "message number {} is not below the next number",
                m.number
            )));
        }
        prev = m.number;
    }
    Ok(())
}
