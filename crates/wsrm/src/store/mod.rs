//! Message stores: the state of reliable sessions, volatile ([`MemoryStore`], WCF's behaviour)
//! or durable across crashes ([`SqliteStore`]).
//!
//! A [`Store`] holds, per outbound sequence (the *source* side), the sequence record, the next
//! message number and every unacknowledged message exactly as it was sent (the encoded envelope,
//! so retransmissions after a restart are byte-identical); per inbound sequence (the
//! *destination* side), the sequence record, the received ranges (what acknowledgements say),
//! the messages received but not yet delivered to the application, and the replies cached for
//! request-reply until the client acknowledges them; and named *cursors* (e.g. how many input
//! lines a `wsrm send` run has taken).
//!
//! ## Writes and durability
//! Every write is a [`Txn`] — one or more [`Op`]s applied all-or-nothing — submitted with
//! [`Store::commit`] (or one of the one-op helpers such as [`Store::record_sent`]). Submitting
//! never blocks: it returns a [`Durable`] completion that resolves to `Ok(())` only once the
//! transaction is durable (SQLite: committed and fsynced; memory: applied). The runtime holds an
//! acknowledgement back until the completion of every write it acknowledges has resolved.
//! Transactions are applied in submission order; the SQLite backend commits many of them in one
//! SQLite transaction and one fsync (*group commit*).
//!
//! ## Exactly-once delivery (the inbox)
//! A received message stays *pending* until [`Store::deliver`] commits its delivery; the
//! application's own writes go into the same SQLite transaction (see [`AppTx`]). Once the
//! completion says `Ok`, the message is never handed out again; before that, a restart hands it
//! out again ([`Store::undelivered`]). Two deliveries of one message: the second fails with
//! [`StoreError::NotPending`] and its application writes are rolled back.
//!
//! ## Reads
//! Reads ([`Store::sources`], [`Store::unacked`], [`Store::undelivered`], ...) return a
//! [`Completion`] too. Message reads are paged (`after`, `limit`), so recovery holds at most one
//! page per sequence in memory. A read observes every transaction submitted before it that
//! succeeded, and nothing that is not yet durable.
//!
//! ## Calling from async code
//! [`Completion`] is a [`Future`]; `.await` it from tokio tasks. Outside an async context,
//! [`Completion::wait`] blocks. No method of [`Store`] blocks on I/O: the SQLite backend does
//! all its I/O on one dedicated writer thread.
//!
//! See `docs/store.md` for the schema, the durability contract and what integration remains.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::oneshot;
use wsrm_proto::msg::{RmVersion, SequenceId};

mod memory;
mod sqlite;

pub use memory::MemoryStore;
/// The `rusqlite` version the SQLite backend uses, for application writes in [`AppTx`].
pub use rusqlite;
pub use sqlite::{
    SqliteOptions, SqliteStore, StoreStats, Synchronous, APPLICATION_ID, SCHEMA_VERSION,
};

/// An error returned by an application write (the closure given to [`Store::deliver`] or
/// [`Op::App`]).
pub type AppError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An application write run inside a store transaction. Returning `Err` rolls back the whole
/// [`Txn`] it belongs to (the message stays pending).
pub type AppWrite = Box<dyn FnOnce(&AppTx<'_>) -> Result<(), AppError> + Send + 'static>;

/// The application's view of the store transaction its write runs in.
///
/// With the SQLite backend, [`AppTx::sqlite`] is the store's connection, inside the (savepoint
/// of the) transaction that also records the delivery: whatever the application writes there
/// commits or rolls back together with it. The application must not issue `BEGIN`, `COMMIT`,
/// `ROLLBACK` or `RELEASE` itself, nor touch the store's own tables (`source_*`, `dest_*`,
/// `reply_cache`, `cursor`); its tables should carry an application prefix. With the memory
/// backend there is no connection ([`AppTx::sqlite`] is `None`): the closure runs under the
/// store's lock, and the delivery is recorded only if it returns `Ok`.
pub struct AppTx<'a> {
    conn: Option<&'a rusqlite::Connection>,
}

impl<'a> AppTx<'a> {
    /// The SQLite connection inside the delivery's transaction (`None` for the memory backend).
    pub fn sqlite(&self) -> Option<&'a rusqlite::Connection> {
        self.conn
    }

    /// Whether writes made through this transaction survive a crash.
    pub fn is_durable(&self) -> bool {
        self.conn.is_some()
    }
}

impl fmt::Debug for AppTx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppTx")
            .field("durable", &self.is_durable())
            .finish()
    }
}

/// Errors of the message stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (or another open in this process) holds the store.
    #[error("store {path} is in use by another process (its lock file {lock} is held)")]
    Locked {
        /// The store file.
        path: PathBuf,
        /// The lock file (`<store>.lock`).
        lock: PathBuf,
    },
    /// The store file exists but is not a readable wsrm store; it is left untouched.
    #[error("store {path} is corrupt or not a wsrm store ({reason}); refusing to open it")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The store was written by a different (newer, or unknown) schema version.
    #[error("store {path} has schema version {found}; this build reads version {supported} only")]
    UnsupportedSchema {
        /// The store file.
        path: PathBuf,
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The version this build writes and reads ([`SCHEMA_VERSION`]).
        supported: i64,
    },
    /// The store does not exist and creating it was not allowed.
    #[error("store {path} does not exist")]
    NotFound {
        /// The store file.
        path: PathBuf,
    },
    /// The store (or its lock file) cannot be opened or created.
    #[error("cannot open store {path}: {reason}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// The operating system's or SQLite's reason.
        reason: String,
    },
    /// A write was refused because the store is read-only (read-only open, file or file system).
    #[error("store is read-only: {reason}")]
    ReadOnly {
        /// SQLite's message.
        reason: String,
    },
    /// A write failed because the disk (or the store's configured size limit) is full.
    #[error("store is full (disk or size limit): {reason}")]
    Full {
        /// SQLite's message.
        reason: String,
    },
    /// An I/O error while reading or writing the store.
    #[error("store I/O error: {reason}")]
    Io {
        /// SQLite's message.
        reason: String,
    },
    /// An earlier write failed in a way that may have left the store incomplete (full disk,
    /// I/O error, read-only); the store accepts no more writes until it is reopened.
    #[error("store refuses writes after an earlier failure ({reason}); reopen it to recover")]
    Poisoned {
        /// The first failure.
        reason: String,
    },
    /// The operation names a sequence the store does not hold (on that side).
    #[error("unknown sequence {sequence}")]
    UnknownSequence {
        /// The sequence.
        sequence: SequenceId,
    },
    /// Creating a sequence that the store already holds (on that side).
    #[error("sequence {sequence} already exists")]
    SequenceExists {
        /// The sequence.
        sequence: SequenceId,
    },
    /// Delivering a message that is not pending: never received, or already delivered.
    #[error("message {number} of sequence {sequence} is not pending delivery")]
    NotPending {
        /// The sequence.
        sequence: SequenceId,
        /// The message number.
        number: u64,
    },
    /// An argument out of range (message number 0 or above 2^63 − 1, an inverted range).
    #[error("invalid store operation: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// The application write of a delivery failed; nothing of its transaction was written.
    #[error("application write failed: {0}")]
    App(#[source] AppError),
    /// Any other SQLite error.
    #[error("sqlite error: {reason}")]
    Sqlite {
        /// SQLite's message.
        reason: String,
    },
    /// The store was closed (its writer thread is gone).
    #[error("store is closed")]
    Closed,
}

/// A pending store result: resolves once the operation is done — for writes, once it is durable.
///
/// `.await` it in async code, or [`Completion::wait`] for it outside an async context.
#[must_use = "a write is only known durable once its completion resolves to Ok"]
#[derive(Debug)]
pub struct Completion<T> {
    rx: oneshot::Receiver<Result<T, StoreError>>,
}

/// The completion of a write: `Ok(())` once the write is durable.
pub type Durable = Completion<()>;

impl<T> Completion<T> {
    pub(crate) fn channel() -> (Self, oneshot::Sender<Result<T, StoreError>>) {
        let (tx, rx) = oneshot::channel();
        (Completion { rx }, tx)
    }

    pub(crate) fn ready(result: Result<T, StoreError>) -> Self {
        let (c, tx) = Self::channel();
        // The receiver is alive (it is in `c`), so this cannot fail.
        let _ = tx.send(result);
        c
    }

    /// Blocks the calling thread until the result is known.
    ///
    /// # Panics
    /// When called from within an asynchronous execution context (a tokio task): `.await` the
    /// completion there instead (tokio's `blocking_recv` rule).
    pub fn wait(self) -> Result<T, StoreError> {
        self.rx.blocking_recv().unwrap_or(Err(StoreError::Closed))
    }

    /// The result if it is already known, without blocking.
    pub fn try_result(&mut self) -> Option<Result<T, StoreError>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(StoreError::Closed)),
        }
    }
}

impl<T> Future for Completion<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Life-cycle state of a stored sequence (either side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SequenceState {
    /// Accepting (destination) / sending (source) messages.
    #[default]
    Open,
    /// Source: the last message is known (1.0 `LastMessage` sent, 1.1 `CloseSequence` sent);
    /// destination: the last message number is known.
    Closing,
    /// 1.1 `CloseSequence` completed: no further messages.
    Closed,
    /// `TerminateSequence` sent or received: only cleanup remains.
    Terminated,
}

impl SequenceState {
    pub(crate) fn code(self) -> i64 {
        match self {
            SequenceState::Open => 0,
            SequenceState::Closing => 1,
            SequenceState::Closed => 2,
            SequenceState::Terminated => 3,
        }
    }

    pub(crate) fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(SequenceState::Open),
            1 => Some(SequenceState::Closing),
            2 => Some(SequenceState::Closed),
            3 => Some(SequenceState::Terminated),
            _ => None,
        }
    }
}

/// What a store records when an outbound sequence is created (source side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// The sequence identifier (from the peer's `CreateSequenceResponse`).
    pub id: SequenceId,
    /// WS-RM version of the sequence.
    pub version: RmVersion,
    /// Where the messages go (the `To` / endpoint URL).
    pub remote: String,
    /// The inbound sequence offered with the `CreateSequence` (request-reply, duplex).
    pub offered: Option<SequenceId>,
    /// An application key to find the sequence again after a restart (e.g. a `wsrm send` run).
    pub label: Option<String>,
    /// The absolute `Expires` deadline, if the sequence has one.
    pub expires: Option<SystemTime>,
    /// The session's InactivityTimeout (`None`: never expires by inactivity).
    pub inactivity_timeout: Option<Duration>,
    /// Opaque engine/runtime state needed to resume the session (e.g. encoded settings, the
    /// session pattern); the store keeps it as is.
    pub extra: Bytes,
}

impl SourceRecord {
    /// A record with no offer, label or `Expires`, WCF's default InactivityTimeout (10 min) and
    /// no extra state.
    pub fn new(id: SequenceId, version: RmVersion, remote: impl Into<String>) -> Self {
        SourceRecord {
            id,
            version,
            remote: remote.into(),
            offered: None,
            label: None,
            expires: None,
            inactivity_timeout: Some(DEFAULT_INACTIVITY_TIMEOUT),
            extra: Bytes::new(),
        }
    }
}

/// WCF's default InactivityTimeout (10 minutes), the default of the records' timeouts.
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(600);

/// A stored outbound sequence as read back (recovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// What was recorded at creation.
    pub record: SourceRecord,
    /// The next message number to assign (1 + the highest number recorded).
    pub next_number: u64,
    /// Life-cycle state.
    pub state: SequenceState,
    /// The last message number, once known.
    pub last_number: Option<u64>,
    /// How many messages are stored unacknowledged.
    pub unacked: u64,
    /// When the sequence was created (store time).
    pub created: SystemTime,
    /// Last peer activity (creation, acknowledgement, [`Op::Touch`]).
    pub last_activity: SystemTime,
}

/// What a store records when an inbound sequence is created (destination side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestRecord {
    /// The sequence identifier (minted by this destination).
    pub id: SequenceId,
    /// WS-RM version of the sequence.
    pub version: RmVersion,
    /// `AcksTo` address from the `CreateSequence`.
    pub acks_to: String,
    /// The accepted offered sequence that replies / duplex messages go out on.
    pub reply_sequence: Option<SequenceId>,
    /// An application key to find the sequence again after a restart.
    pub label: Option<String>,
    /// The absolute `Expires` deadline, if the sequence has one.
    pub expires: Option<SystemTime>,
    /// The session's InactivityTimeout (`None`: never expires by inactivity).
    pub inactivity_timeout: Option<Duration>,
    /// Opaque engine/runtime state needed to resume the session; kept as is.
    pub extra: Bytes,
}

impl DestRecord {
    /// A record with no reply sequence, label or `Expires`, WCF's default InactivityTimeout
    /// (10 min) and no extra state.
    pub fn new(id: SequenceId, version: RmVersion, acks_to: impl Into<String>) -> Self {
        DestRecord {
            id,
            version,
            acks_to: acks_to.into(),
            reply_sequence: None,
            label: None,
            expires: None,
            inactivity_timeout: Some(DEFAULT_INACTIVITY_TIMEOUT),
            extra: Bytes::new(),
        }
    }
}

/// A stored inbound sequence as read back (recovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestInfo {
    /// What was recorded at creation.
    pub record: DestRecord,
    /// Every message number received (and so acknowledged), as ascending inclusive ranges.
    pub ranges: Vec<(u64, u64)>,
    /// Life-cycle state.
    pub state: SequenceState,
    /// The last message number, once known (1.0 `LastMessage`, 1.1 `CloseSequence`).
    pub last_number: Option<u64>,
    /// How many received messages are not yet delivered.
    pub pending: u64,
    /// Every message `1..=delivered_through` has been delivered.
    pub delivered_through: u64,
    /// Request-reply: 1 + the highest reply number ever cached ([`Op::CacheReply`]), i.e. the
    /// number the next reply on the reply sequence gets (kept after replies are acknowledged).
    pub next_reply_number: u64,
    /// When the sequence was created (store time).
    pub created: SystemTime,
    /// Last peer activity (creation, a received message, a state change, [`Op::Touch`]).
    pub last_activity: SystemTime,
}

/// An unacknowledged outbound message as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Message number.
    pub number: u64,
    /// The encoded envelope exactly as first sent.
    pub envelope: Bytes,
}

/// A received message not yet delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// Message number.
    pub number: u64,
    /// `wsa:Action`.
    pub action: String,
    /// The application body.
    pub payload: Bytes,
    /// Whether it carried the 1.0 `LastMessage` marker.
    pub last: bool,
}

/// A reply cached for a request until the client acknowledges the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReply {
    /// Number of the request (inbound sequence) it answers.
    pub request_number: u64,
    /// The sequence the reply goes out on (the offered sequence).
    pub reply_sequence: SequenceId,
    /// Number of the reply on `reply_sequence`.
    pub reply_number: u64,
    /// The encoded reply envelope exactly as first sent.
    pub envelope: Bytes,
}

/// Which side of a session a stored sequence belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Outbound sequence (we are its RM Source).
    Source,
    /// Inbound sequence (we are its RM Destination).
    Destination,
}

/// Why [`Store::remove_expired`] removed a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpiryReason {
    /// No peer activity for longer than its InactivityTimeout.
    Inactivity,
    /// Its `Expires` deadline passed.
    Expires,
}

/// A sequence removed by [`Store::remove_expired`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredSequence {
    /// Side of the sequence.
    pub side: Side,
    /// Its identifier.
    pub id: SequenceId,
    /// Its label, if any.
    pub label: Option<String>,
    /// Why it was removed.
    pub reason: ExpiryReason,
}

/// One store write; [`Txn`] groups them all-or-nothing.
pub enum Op {
    /// Source: record a new outbound sequence (fails with [`StoreError::SequenceExists`] if it
    /// is already stored).
    CreateSource(SourceRecord),
    /// Source: record a message as first sent. Numbers below the sequence's next number were
    /// recorded before (and may since have been acknowledged): they are left as they are, so
    /// the stored envelope is always the first one.
    RecordSent {
        /// The outbound sequence.
        sequence: SequenceId,
        /// Its message number (1 ..= 2^63 − 1).
        number: u64,
        /// The encoded envelope.
        envelope: Bytes,
    },
    /// Source: the peer acknowledged these inclusive ranges; their messages are deleted.
    SourceAcked {
        /// The outbound sequence.
        sequence: SequenceId,
        /// Inclusive ranges, as in the `SequenceAcknowledgement`.
        ranges: Vec<(u64, u64)>,
    },
    /// Source: a life-cycle change (and the last message number, once known).
    SourceState {
        /// The outbound sequence.
        sequence: SequenceId,
        /// New state.
        state: SequenceState,
        /// The last message number (`None` leaves it unchanged).
        last_number: Option<u64>,
    },
    /// Source: forget the sequence and its messages (no error if it is not stored).
    RemoveSource {
        /// The outbound sequence.
        sequence: SequenceId,
    },
    /// Set a named cursor (e.g. how many input lines a run has taken).
    SetCursor {
        /// Cursor name.
        name: String,
        /// Its value.
        value: u64,
    },
    /// Remove a named cursor (no error if absent).
    RemoveCursor {
        /// Cursor name.
        name: String,
    },
    /// Destination: record a new inbound sequence (fails with
    /// [`StoreError::SequenceExists`] if already stored).
    CreateDest(DestRecord),
    /// Destination: a message arrived. It joins the received ranges and becomes pending;
    /// a number already received (delivered or not) changes nothing.
    Received {
        /// The inbound sequence.
        sequence: SequenceId,
        /// Its message number (1 ..= 2^63 − 1).
        number: u64,
        /// `wsa:Action`.
        action: String,
        /// The application body.
        payload: Bytes,
        /// The 1.0 `LastMessage` marker (also records `number` as the last number).
        last: bool,
    },
    /// Destination: a life-cycle change (and the last message number, once known).
    DestState {
        /// The inbound sequence.
        sequence: SequenceId,
        /// New state.
        state: SequenceState,
        /// The last message number (`None` leaves it unchanged).
        last_number: Option<u64>,
    },
    /// Destination: the application took this message. Fails with
    /// [`StoreError::NotPending`] if it is not pending; the application write (if any) runs
    /// after that check, in the same transaction.
    Deliver {
        /// The inbound sequence.
        sequence: SequenceId,
        /// The message number.
        number: u64,
        /// The application's own writes, committed together with the delivery.
        app: Option<AppWrite>,
    },
    /// Destination (request-reply): cache the reply to a request until it is acknowledged
    /// (replaces an earlier reply to the same request).
    CacheReply {
        /// The inbound (request) sequence.
        sequence: SequenceId,
        /// The reply.
        reply: CachedReply,
    },
    /// Destination (request-reply): the client acknowledged these replies (inclusive ranges
    /// of reply numbers on `reply_sequence`); their cached copies are deleted.
    RepliesAcked {
        /// The outbound reply sequence.
        reply_sequence: SequenceId,
        /// Inclusive ranges of reply numbers.
        ranges: Vec<(u64, u64)>,
    },
    /// Destination: forget the sequence, its pending messages and cached replies (no error if
    /// it is not stored).
    RemoveDest {
        /// The inbound sequence.
        sequence: SequenceId,
    },
    /// Record peer activity on a sequence (either side; no error if not stored), which
    /// postpones its inactivity expiry.
    Touch {
        /// The sequence.
        sequence: SequenceId,
    },
    /// An application write with no delivery.
    App(AppWrite),
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::CreateSource(r) => f.debug_tuple("CreateSource").field(r).finish(),
            Op::RecordSent {
                sequence,
                number,
                envelope,
            } => f
                .debug_struct("RecordSent")
                .field("sequence", sequence)
                .field("number", number)
                .field("envelope_len", &envelope.len())
                .finish(),
            Op::SourceAcked { sequence, ranges } => f
                .debug_struct("SourceAcked")
                .field("sequence", sequence)
                .field("ranges", ranges)
                .finish(),
            Op::SourceState {
                sequence,
                state,
                last_number,
            } => f
                .debug_struct("SourceState")
                .field("sequence", sequence)
                .field("state", state)
                .field("last_number", last_number)
                .finish(),
            Op::RemoveSource { sequence } => f
                .debug_struct("RemoveSource")
                .field("sequence", sequence)
                .finish(),
            Op::SetCursor { name, value } => f
                .debug_struct("SetCursor")
                .field("name", name)
                .field("value", value)
                .finish(),
            Op::RemoveCursor { name } => {
                f.debug_struct("RemoveCursor").field("name", name).finish()
            }
            Op::CreateDest(r) => f.debug_tuple("CreateDest").field(r).finish(),
            Op::Received {
                sequence,
                number,
                action,
                payload,
                last,
            } => f
                .debug_struct("Received")
                .field("sequence", sequence)
                .field("number", number)
                .field("action", action)
                .field("payload_len", &payload.len())
                .field("last", last)
                .finish(),
            Op::DestState {
                sequence,
                state,
                last_number,
            } => f
                .debug_struct("DestState")
                .field("sequence", sequence)
                .field("state", state)
                .field("last_number", last_number)
                .finish(),
            Op::Deliver {
                sequence,
                number,
                app,
            } => f
                .debug_struct("Deliver")
                .field("sequence", sequence)
                .field("number", number)
                .field("app", &app.is_some())
                .finish(),
            Op::CacheReply { sequence, reply } => f
                .debug_struct("CacheReply")
                .field("sequence", sequence)
                .field("request_number", &reply.request_number)
                .field("reply_sequence", &reply.reply_sequence)
                .field("reply_number", &reply.reply_number)
                .finish(),
            Op::RepliesAcked {
                reply_sequence,
                ranges,
            } => f
                .debug_struct("RepliesAcked")
                .field("reply_sequence", reply_sequence)
                .field("ranges", ranges)
                .finish(),
            Op::RemoveDest { sequence } => f
                .debug_struct("RemoveDest")
                .field("sequence", sequence)
                .finish(),
            Op::Touch { sequence } => f.debug_struct("Touch").field("sequence", sequence).finish(),
            Op::App(_) => f.write_str("App"),
        }
    }
}

impl Op {
    /// Bytes of message data the op carries (for batch sizing).
    pub(crate) fn data_len(&self) -> usize {
        match self {
            Op::RecordSent { envelope, .. } => envelope.len(),
            Op::Received {
                payload, action, ..
            } => payload.len() + action.len(),
            Op::CacheReply { reply, .. } => reply.envelope.len(),
            _ => 0,
        }
    }
}

/// Checks a message number is within 1 ..= 2^63 − 1.
/// How far past the first gap of a destination sequence a received message may be stored:
/// twice the largest MaxTransferWindowSize (4096). The engine never admits (and so never
/// acknowledges) a message a window or more past the gap, so refusing these loses nothing, and
/// a hostile client cannot fill the store with numbers far beyond the window.
pub const MAX_RECEIVE_AHEAD: u64 = 2 * 4096;

/// Refuses a received message number too far past the first gap (see [`MAX_RECEIVE_AHEAD`]).
pub(crate) fn check_receive_ahead(
    number: u64,
    ranges: &wsrm_proto::ranges::RangeSet,
) -> Result<(), StoreError> {
    let prefix = ranges.contiguous_prefix();
    if number > prefix.saturating_add(MAX_RECEIVE_AHEAD) {
        return Err(StoreError::Invalid {
            reason: format!(
                "message number {number} is more than {MAX_RECEIVE_AHEAD} past the first gap ({})",
                prefix + 1
            ),
        });
    }
    Ok(())
}

pub(crate) fn check_number(number: u64) -> Result<(), StoreError> {
    if number == 0 || number > wsrm_proto::msg::MAX_MESSAGE_NUMBER {
        return Err(StoreError::Invalid {
            reason: format!("message number {number} is outside 1..=2^63-1"),
        });
    }
    Ok(())
}

/// Checks acknowledgement ranges are well formed.
pub(crate) fn check_ranges(ranges: &[(u64, u64)]) -> Result<(), StoreError> {
    for &(lower, upper) in ranges {
        check_number(lower)?;
        check_number(upper)?;
        if lower > upper {
            return Err(StoreError::Invalid {
                reason: format!("range {lower}-{upper} is inverted"),
            });
        }
    }
    Ok(())
}

/// A group of [`Op`]s applied all-or-nothing, stamped with the time used for activity and
/// creation timestamps.
#[derive(Debug)]
pub struct Txn {
    ops: Vec<Op>,
    at: SystemTime,
}

impl Default for Txn {
    fn default() -> Self {
        Txn::new()
    }
}

impl Txn {
    /// An empty transaction stamped with the current time.
    pub fn new() -> Self {
        Txn {
            ops: Vec::new(),
            at: SystemTime::now(),
        }
    }

    /// A one-op transaction stamped with the current time.
    pub fn single(op: Op) -> Self {
        Txn {
            ops: vec![op],
            at: SystemTime::now(),
        }
    }

    /// Adds an op (builder style).
    pub fn with(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Adds an op.
    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Sets the time stamp (activity, creation) the ops record.
    pub fn at(mut self, at: SystemTime) -> Self {
        self.at = at;
        self
    }

    /// The time stamp.
    pub fn time(&self) -> SystemTime {
        self.at
    }

    /// The ops.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there are no ops.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn data_len(&self) -> usize {
        self.ops.iter().map(Op::data_len).sum()
    }

    pub(crate) fn into_parts(self) -> (Vec<Op>, SystemTime) {
        (self.ops, self.at)
    }
}

/// Where a store lives, as given on a command line: `memory` or `sqlite:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The volatile in-memory store (WCF's behaviour).
    Memory,
    /// A durable SQLite store at this path.
    Sqlite(PathBuf),
}

/// A store specification that is neither `memory` nor `sqlite:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store {0:?}: expected `memory` or `sqlite:PATH`")]
pub struct StoreSpecError(pub String);

impl FromStr for StoreSpec {
    type Err = StoreSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            return Ok(StoreSpec::Memory);
        }
        match s.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => Ok(StoreSpec::Sqlite(PathBuf::from(path))),
            _ => Err(StoreSpecError(s.to_owned())),
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
        }
    }
}

#[derive(Clone, Debug)]
enum Backend {
    Memory(MemoryStore),
    Sqlite(SqliteStore),
}

/// A message store: a cheap-to-clone handle on a [`MemoryStore`] or a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

impl From<MemoryStore> for Store {
    fn from(m: MemoryStore) -> Self {
        Store {
            backend: Backend::Memory(m),
        }
    }
}

impl From<SqliteStore> for Store {
    fn from(s: SqliteStore) -> Self {
        Store {
            backend: Backend::Sqlite(s),
        }
    }
}

impl Store {
    /// A new, empty in-memory store.
    pub fn memory() -> Store {
        MemoryStore::new().into()
    }

    /// Opens (creating it if missing, unless `options` say otherwise) the SQLite store at
    /// `path`. See [`SqliteStore::open`] for the checks made.
    pub fn open_sqlite(
        path: impl AsRef<Path>,
        options: &SqliteOptions,
    ) -> Result<Store, StoreError> {
        SqliteStore::open(path, options).map(Store::from)
    }

    /// Opens the store a [`StoreSpec`] names, with default SQLite options.
    pub fn open(spec: &StoreSpec) -> Result<Store, StoreError> {
        match spec {
            StoreSpec::Memory => Ok(Store::memory()),
            StoreSpec::Sqlite(path) => Store::open_sqlite(path, &SqliteOptions::default()),
        }
    }

    /// Whether what the store reports durable survives a crash (SQLite: yes; memory: no).
    pub fn is_durable(&self) -> bool {
        matches!(self.backend, Backend::Sqlite(_))
    }

    /// The SQLite backend, if that is what this store is.
    pub fn as_sqlite(&self) -> Option<&SqliteStore> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s),
            Backend::Memory(_) => None,
        }
    }

    /// The memory backend, if that is what this store is.
    pub fn as_memory(&self) -> Option<&MemoryStore> {
        match &self.backend {
            Backend::Memory(m) => Some(m),
            Backend::Sqlite(_) => None,
        }
    }

    /// Submits a transaction; never blocks. Resolves to `Ok(())` once it is durable, or to the
    /// error that rolled it back (nothing of it was written).
    pub fn commit(&self, txn: Txn) -> Durable {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(m.commit(txn)),
            Backend::Sqlite(s) => s.commit(txn),
        }
    }

    /// Resolves once every write submitted before it has completed (durable or failed).
    pub fn flush(&self) -> Durable {
        match &self.backend {
            Backend::Memory(_) => Completion::ready(Ok(())),
            Backend::Sqlite(s) => s.flush(),
        }
    }

    /// [`Op::CreateSource`] on its own.
    pub fn create_source(&self, record: SourceRecord) -> Durable {
        self.commit(Txn::single(Op::CreateSource(record)))
    }

    /// [`Op::RecordSent`] on its own.
    pub fn record_sent(&self, sequence: &SequenceId, number: u64, envelope: Bytes) -> Durable {
        self.commit(Txn::single(Op::RecordSent {
            sequence: sequence.clone(),
            number,
            envelope,
        }))
    }

    /// [`Op::RecordSent`] and [`Op::SetCursor`] atomically: the message and the input
    /// position after it are durable together (`wsrm send --resume`).
    pub fn record_sent_with_cursor(
        &self,
        sequence: &SequenceId,
        number: u64,
        envelope: Bytes,
        cursor: &str,
        value: u64,
    ) -> Durable {
        self.commit(
            Txn::new()
                .with(Op::RecordSent {
                    sequence: sequence.clone(),
                    number,
                    envelope,
                })
                .with(Op::SetCursor {
                    name: cursor.to_owned(),
                    value,
                }),
        )
    }

    /// [`Op::SourceAcked`] on its own.
    pub fn source_acked(&self, sequence: &SequenceId, ranges: &[(u64, u64)]) -> Durable {
        self.commit(Txn::single(Op::SourceAcked {
            sequence: sequence.clone(),
            ranges: ranges.to_vec(),
        }))
    }

    /// [`Op::SourceState`] on its own.
    pub fn set_source_state(
        &self,
        sequence: &SequenceId,
        state: SequenceState,
        last_number: Option<u64>,
    ) -> Durable {
        self.commit(Txn::single(Op::SourceState {
            sequence: sequence.clone(),
            state,
            last_number,
        }))
    }

    /// [`Op::RemoveSource`] on its own.
    pub fn remove_source(&self, sequence: &SequenceId) -> Durable {
        self.commit(Txn::single(Op::RemoveSource {
            sequence: sequence.clone(),
        }))
    }

    /// [`Op::SetCursor`] on its own.
    pub fn set_cursor(&self, name: &str, value: u64) -> Durable {
        self.commit(Txn::single(Op::SetCursor {
            name: name.to_owned(),
            value,
        }))
    }

    /// [`Op::CreateDest`] on its own.
    pub fn create_dest(&self, record: DestRecord) -> Durable {
        self.commit(Txn::single(Op::CreateDest(record)))
    }

    /// [`Op::Received`] on its own.
    pub fn received(
        &self,
        sequence: &SequenceId,
        number: u64,
        action: &str,
        payload: Bytes,
        last: bool,
    ) -> Durable {
        self.commit(Txn::single(Op::Received {
            sequence: sequence.clone(),
            number,
            action: action.to_owned(),
            payload,
            last,
        }))
    }

    /// [`Op::DestState`] on its own.
    pub fn set_dest_state(
        &self,
        sequence: &SequenceId,
        state: SequenceState,
        last_number: Option<u64>,
    ) -> Durable {
        self.commit(Txn::single(Op::DestState {
            sequence: sequence.clone(),
            state,
            last_number,
        }))
    }

    /// The inbox commit: marks message `number` of `sequence` delivered and runs `app` — the
    /// application's own writes — in the same transaction. Resolves to `Ok(())` once both are
    /// durable; from then on the message is never handed out again. On any error (including
    /// [`StoreError::NotPending`]: already delivered) nothing of it is written.
    pub fn deliver<F>(&self, sequence: &SequenceId, number: u64, app: F) -> Durable
    where
        F: FnOnce(&AppTx<'_>) -> Result<(), AppError> + Send + 'static,
    {
        self.commit(Txn::single(Op::Deliver {
            sequence: sequence.clone(),
            number,
            app: Some(Box::new(app)),
        }))
    }

    /// [`Op::Deliver`] with no application write.
    pub fn mark_delivered(&self, sequence: &SequenceId, number: u64) -> Durable {
        self.commit(Txn::single(Op::Deliver {
            sequence: sequence.clone(),
            number,
            app: None,
        }))
    }

    /// [`Op::CacheReply`] on its own.
    pub fn cache_reply(&self, sequence: &SequenceId, reply: CachedReply) -> Durable {
        self.commit(Txn::single(Op::CacheReply {
            sequence: sequence.clone(),
            reply,
        }))
    }

    /// [`Op::RepliesAcked`] on its own.
    pub fn replies_acked(&self, reply_sequence: &SequenceId, ranges: &[(u64, u64)]) -> Durable {
        self.commit(Txn::single(Op::RepliesAcked {
            reply_sequence: reply_sequence.clone(),
            ranges: ranges.to_vec(),
        }))
    }

    /// [`Op::RemoveDest`] on its own.
    pub fn remove_dest(&self, sequence: &SequenceId) -> Durable {
        self.commit(Txn::single(Op::RemoveDest {
            sequence: sequence.clone(),
        }))
    }

    /// [`Op::Touch`] on its own.
    pub fn touch(&self, sequence: &SequenceId) -> Durable {
        self.commit(Txn::single(Op::Touch {
            sequence: sequence.clone(),
        }))
    }

    /// Removes (with their messages and cached replies) every sequence whose `Expires` is at
    /// or before `now`, or whose last activity plus InactivityTimeout is at or before `now`;
    /// returns what it removed. Atomic and durable like a [`Txn`].
    pub fn remove_expired(&self, now: SystemTime) -> Completion<Vec<ExpiredSequence>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.remove_expired(now))),
            Backend::Sqlite(s) => s.remove_expired(now),
        }
    }

    /// Every stored outbound sequence (metadata only; messages via [`Store::unacked`]).
    pub fn sources(&self) -> Completion<Vec<SourceInfo>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.sources())),
            Backend::Sqlite(s) => s.sources(),
        }
    }

    /// One stored outbound sequence.
    pub fn source(&self, sequence: &SequenceId) -> Completion<Option<SourceInfo>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.source(sequence))),
            Backend::Sqlite(s) => s.source(sequence),
        }
    }

    /// Up to `limit` unacknowledged messages of `sequence` numbered above `after`, ascending.
    /// Page through with `after` = the last number returned; an empty page ends.
    pub fn unacked(
        &self,
        sequence: &SequenceId,
        after: u64,
        limit: usize,
    ) -> Completion<Vec<StoredMessage>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.unacked(sequence, after, limit))),
            Backend::Sqlite(s) => s.unacked(sequence, after, limit),
        }
    }

    /// Every stored inbound sequence (metadata and ranges; messages via
    /// [`Store::undelivered`]).
    pub fn destinations(&self) -> Completion<Vec<DestInfo>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.destinations())),
            Backend::Sqlite(s) => s.destinations(),
        }
    }

    /// One stored inbound sequence.
    pub fn destination(&self, sequence: &SequenceId) -> Completion<Option<DestInfo>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.destination(sequence))),
            Backend::Sqlite(s) => s.destination(sequence),
        }
    }

    /// Up to `limit` pending (received, not delivered) messages of `sequence` numbered above
    /// `after`, ascending.
    pub fn undelivered(
        &self,
        sequence: &SequenceId,
        after: u64,
        limit: usize,
    ) -> Completion<Vec<PendingMessage>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.undelivered(sequence, after, limit))),
            Backend::Sqlite(s) => s.undelivered(sequence, after, limit),
        }
    }

    /// The cached reply to request `request_number` of `sequence`, if any.
    pub fn cached_reply(
        &self,
        sequence: &SequenceId,
        request_number: u64,
    ) -> Completion<Option<CachedReply>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.cached_reply(sequence, request_number))),
            Backend::Sqlite(s) => s.cached_reply(sequence, request_number),
        }
    }

    /// Up to `limit` cached replies of `sequence` for requests numbered above `after`,
    /// ascending by request number.
    pub fn cached_replies(
        &self,
        sequence: &SequenceId,
        after: u64,
        limit: usize,
    ) -> Completion<Vec<CachedReply>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.cached_replies(sequence, after, limit))),
            Backend::Sqlite(s) => s.cached_replies(sequence, after, limit),
        }
    }

    /// The value of a named cursor.
    pub fn cursor(&self, name: &str) -> Completion<Option<u64>> {
        match &self.backend {
            Backend::Memory(m) => Completion::ready(Ok(m.cursor(name))),
            Backend::Sqlite(s) => s.cursor(name),
        }
    }
}

/// Milliseconds since the Unix epoch (saturating; times before 1970 count as 0).
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The inverse of [`to_millis`].
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Milliseconds of a duration (saturating).
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The instant a sequence expires by inactivity (saturating).
pub(crate) fn inactivity_deadline(last_activity: SystemTime, timeout: Duration) -> SystemTime {
    last_activity
        .checked_add(timeout)
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX / 4))
}

/// `delivered_through` from the received ranges and the lowest pending number.
pub(crate) fn delivered_through(ranges: &[(u64, u64)], lowest_pending: Option<u64>) -> u64 {
    let prefix = match ranges.first() {
        Some(&(1, upper)) => upper,
        _ => 0,
    };
    match lowest_pending {
        Some(p) => prefix.min(p.saturating_sub(1)),
        None => prefix,
    }
}
