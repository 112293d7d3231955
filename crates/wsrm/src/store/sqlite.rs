//! The durable store: one SQLite file (WAL), one writer thread with group commit, an exclusive
//! lock per store.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;
use wsrm_proto::msg::{RmVersion, SequenceId};
use wsrm_proto::ranges::RangeSet;

use super::{
    check_number, check_ranges, delivered_through, duration_millis, from_millis, to_millis, AppTx,
    AppWrite, CachedReply, Completion, DestInfo, DestRecord, Durable, ExpiredSequence,
    ExpiryReason, Op, PendingMessage, SequenceState, Side, SourceInfo, SourceRecord, StoreError,
    StoredMessage, Txn,
};

/// `PRAGMA application_id` of a wsrm store (`"WSRM"` in ASCII).
pub const APPLICATION_ID: i32 = 0x5753_524D;

/// `PRAGMA user_version` this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

/// The schema of version 1 (see `docs/store.md`). Message tables are rowid tables (rows of
/// about 1 KiB stay inside their b-tree page; a `WITHOUT ROWID` table would spill every such
/// row to an overflow page), with the primary key as a separate index.
const SCHEMA_V1: &str = "
CREATE TABLE source_seq (
    seq_id        TEXT PRIMARY KEY NOT NULL,
    version       INTEGER NOT NULL,
    remote        TEXT NOT NULL,
    offered       TEXT,
    label         TEXT,
    expires_ms    INTEGER,
    inactivity_ms INTEGER,
    extra         BLOB NOT NULL,
    next_number   INTEGER NOT NULL,
    state         INTEGER NOT NULL,
    last_number   INTEGER,
    created_ms    INTEGER NOT NULL,
    activity_ms   INTEGER NOT NULL
);
CREATE TABLE source_msg (
    seq_id   TEXT NOT NULL,
    number   INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    PRIMARY KEY (seq_id, number)
);
CREATE TABLE dest_seq (
    seq_id        TEXT PRIMARY KEY NOT NULL,
    version       INTEGER NOT NULL,
    acks_to       TEXT NOT NULL,
    reply_seq     TEXT,
    label         TEXT,
    expires_ms    INTEGER,
    inactivity_ms INTEGER,
    extra         BLOB NOT NULL,
    ranges        TEXT NOT NULL,
    reply_next    INTEGER NOT NULL,
    state         INTEGER NOT NULL,
    last_number   INTEGER,
    created_ms    INTEGER NOT NULL,
    activity_ms   INTEGER NOT NULL
);
CREATE TABLE dest_msg (
    seq_id  TEXT NOT NULL,
    number  INTEGER NOT NULL,
    action  TEXT NOT NULL,
    payload BLOB NOT NULL,
    last    INTEGER NOT NULL,
    PRIMARY KEY (seq_id, number)
);
CREATE TABLE reply_cache (
    seq_id         TEXT NOT NULL,
    request_number INTEGER NOT NULL,
    reply_seq      TEXT NOT NULL,
    reply_number   INTEGER NOT NULL,
    envelope       BLOB NOT NULL,
    PRIMARY KEY (seq_id, request_number)
);
CREATE INDEX reply_cache_by_reply ON reply_cache (reply_seq, reply_number);
CREATE TABLE cursor (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// SQLite's `synchronous` setting for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `synchronous=FULL`: every commit fsyncs the WAL, so a completion that resolved `Ok`
    /// survives a crash of the process *and* of the machine (power loss). The default; group
    /// commit pays one fsync per batch, not per message.
    #[default]
    Full,
    /// `synchronous=NORMAL`: commits reach the WAL (the OS page cache) without fsync; they
    /// survive a crash of the process but the last ones may be lost on power loss. Faster;
    /// acknowledgements can then be for data a power cut loses.
    Normal,
}

/// Options of [`SqliteStore::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Durability of commits. Default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// Open for reading only (writes fail with [`StoreError::ReadOnly`]). Default false.
    pub read_only: bool,
    /// Create the store if the file does not exist. Default true.
    pub create: bool,
    /// Run `PRAGMA quick_check` at open (reads the whole file once) and refuse a damaged
    /// store. Default true.
    pub verify: bool,
    /// Cap the store's size (SQLite `max_page_count`); writes past it fail with
    /// [`StoreError::Full`]. Default none (the disk is the limit).
    pub max_size_bytes: Option<u64>,
    /// Most transactions committed together by one group commit. Default 1024.
    pub max_batch: usize,
    /// Most message bytes committed together by one group commit. Default 8 MiB.
    pub max_batch_bytes: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            read_only: false,
            create: true,
            verify: true,
            max_size_bytes: None,
            max_batch: 1024,
            max_batch_bytes: 8 << 20,
        }
    }
}

impl SqliteOptions {
    /// Sets [`SqliteOptions::synchronous`].
    pub fn synchronous(mut self, s: Synchronous) -> Self {
        self.synchronous = s;
        self
    }

    /// Sets [`SqliteOptions::read_only`].
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets [`SqliteOptions::create`].
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Sets [`SqliteOptions::verify`].
    pub fn verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Sets [`SqliteOptions::max_size_bytes`].
    pub fn max_size_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_size_bytes = bytes;
        self
    }

    /// Sets [`SqliteOptions::max_batch`] (at least 1).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }
}

type Job = Box<dyn FnOnce(&mut Writer) + Send + 'static>;

/// Where a write's outcome goes.
type Done = oneshot::Sender<Result<(), StoreError>>;

enum Request {
    Write(Txn, Done),
    Run(Job),
}

/// Counters of a [`SqliteStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// SQLite transactions committed (= fsyncs of the WAL with [`Synchronous::Full`]).
    pub commits: u64,
    /// Store transactions ([`Txn`]s) that became durable.
    pub transactions: u64,
    /// Store transactions that failed.
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    transactions: AtomicU64,
    failed: AtomicU64,
}

struct Shared {
    counters: Arc<Counters>,
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish what is queued, close the database
        // (checkpointing the WAL) and release the lock; wait for it so that a reopen in this
        // process finds the store free.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(path = %self.path.display(), "store writer thread panicked");
            }
        }
    }
}

/// The SQLite store. Cloning gives another handle on the same writer; the store closes when
/// the last handle is dropped: dropping it waits for the writer thread to finish every queued
/// operation and release the lock (so a reopen right after succeeds). In async code, drop the
/// last handle after awaiting its writes (or from `spawn_blocking`) to keep that wait short.
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .finish()
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    path: PathBuf,
    poisoned: Option<String>,
    counters: Arc<Counters>,
    max_batch: usize,
    max_batch_bytes: usize,
    // Held (locked) for as long as the writer lives.
    _lock: Option<File>,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

fn open_error(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Maps a SQLite error at open time.
fn open_sqlite_error(path: &Path, e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            corrupt(path, e.to_string())
        }
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => StoreError::Locked {
            path: path.to_path_buf(),
            lock: lock_path(path),
        },
        _ => open_error(path, e),
    }
}

/// Maps a SQLite error during operation; the flag says whether the failure dooms the whole
/// batch (the transaction may be gone or the store incomplete).
fn classify(path: &Path, e: &rusqlite::Error) -> (bool, StoreError) {
    let reason = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => (true, StoreError::Full { reason }),
        Some(ErrorCode::ReadOnly) => (true, StoreError::ReadOnly { reason }),
        Some(ErrorCode::SystemIoFailure)
        | Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::OutOfMemory)
        | Some(ErrorCode::DatabaseBusy)
        | Some(ErrorCode::DatabaseLocked)
        | Some(ErrorCode::FileLockingProtocolFailed) => (true, StoreError::Io { reason }),
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
            (true, corrupt(path, reason))
        }
        _ => (false, StoreError::Sqlite { reason }),
    }
}

/// Internal error of one op: local (roll back the op's transaction) or fatal (the batch).
enum OpError {
    Local(StoreError),
    Fatal(StoreError),
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Local(e)
    }
}

struct Ctx<'a> {
    path: &'a Path,
    /// Group commit: the received ranges of destination sequences touched by bare `Received`
    /// ops in this batch, written back once per sequence ([`flush_dests`]) instead of a
    /// SELECT and an UPDATE of the sequence row per message. `None` outside a batch's bare
    /// ops.
    dests: Option<&'a std::cell::RefCell<HashMap<SequenceId, BatchDest>>>,
}

/// A destination sequence's row as bare `Received` ops of the running batch left it.
struct BatchDest {
    ranges: RangeSet,
    activity_ms: i64,
    last_number: Option<i64>,
    dirty: bool,
}

/// Writes the batch's cached destination rows back (before any other op can read them, and
/// before the batch commits). A failure here cannot be undone per transaction: fatal.
fn flush_dests(
    ctx: &Ctx<'_>,
    c: &Connection,
    dests: &std::cell::RefCell<HashMap<SequenceId, BatchDest>>,
) -> Result<(), OpError> {
    let mut map = dests.borrow_mut();
    for (id, d) in map.iter().filter(|(_, d)| d.dirty) {
        c.prepare_cached(
            "UPDATE dest_seq SET ranges = ?2, activity_ms = ?3,
             last_number = COALESCE(?4, last_number) WHERE seq_id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                id.as_str(),
                encode_ranges(&d.ranges),
                d.activity_ms,
                d.last_number
            ])
        })
        .map_err(|e| match ctx.sql(e) {
            OpError::Local(e) | OpError::Fatal(e) => OpError::Fatal(e),
        })?;
    }
    map.clear();
    Ok(())
}

impl Ctx<'_> {
    fn sql(&self, e: rusqlite::Error) -> OpError {
        match classify(self.path, &e) {
            (true, err) => OpError::Fatal(err),
            (false, err) => OpError::Local(err),
        }
    }
}

fn num(n: u64) -> Result<i64, StoreError> {
    check_number(n)?;
    i64::try_from(n).map_err(|_| StoreError::Invalid {
        reason: format!("message number {n} too large"),
    })
}

fn version_code(v: RmVersion) -> i64 {
    match v {
        RmVersion::Wsrm10 => 0,
        RmVersion::Wsrm11 => 1,
    }
}

fn version_from(code: i64) -> rusqlite::Result<RmVersion> {
    match code {
        0 => Ok(RmVersion::Wsrm10),
        1 => Ok(RmVersion::Wsrm11),
        _ => Err(rusqlite::Error::IntegralValueOutOfRange(1, code)),
    }
}

fn state_from(code: i64) -> rusqlite::Result<SequenceState> {
    SequenceState::from_code(code).ok_or(rusqlite::Error::IntegralValueOutOfRange(9, code))
}

fn u64_from(v: i64) -> rusqlite::Result<u64> {
    u64::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, v))
}

fn encode_ranges(r: &RangeSet) -> String {
    let mut s = String::new();
    for (i, (l, u)) in r.ranges().iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&l.to_string());
        s.push('-');
        s.push_str(&u.to_string());
    }
    s
}

fn decode_ranges(s: &str) -> Option<RangeSet> {
    let mut out = Vec::new();
    if !s.is_empty() {
        for part in s.split(',') {
            let (l, u) = part.split_once('-')?;
            let l: u64 = l.parse().ok()?;
            let u: u64 = u.parse().ok()?;
            if l == 0 || l > u {
                return None;
            }
            out.push((l, u));
        }
    }
    Some(RangeSet::from_ranges(&out))
}

fn ranges_column(s: String) -> rusqlite::Result<RangeSet> {
    decode_ranges(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("malformed ranges {s:?}").into(),
        )
    })
}

fn opt_duration(ms: Option<i64>) -> Option<Duration> {
    ms.map(|m| Duration::from_millis(u64::try_from(m).unwrap_or(0)))
}

impl SqliteStore {
    /// Opens the store at `path`, creating it when missing (and [`SqliteOptions::create`]).
    ///
    /// * Takes an exclusive lock (`flock` on `<path>.lock`, plus SQLite's
    ///   `locking_mode=EXCLUSIVE`): a second open, in this or another process, fails with
    ///   [`StoreError::Locked`] while the first is alive.
    /// * A new store is created under a temporary name and renamed into place once its schema
    ///   is complete, so an existing file is always a complete store: an existing file that is
    ///   empty, not SQLite, damaged (`PRAGMA quick_check`, with [`SqliteOptions::verify`]) or
    ///   another application's database fails with [`StoreError::Corrupt`] and is left as is.
    /// * An unknown `user_version` fails with [`StoreError::UnsupportedSchema`].
    pub fn open(path: impl AsRef<Path>, options: &SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let lock = acquire_lock(&path, options.read_only)?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(open_error(&path, "not a regular file")),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                if options.read_only || !options.create {
                    return Err(StoreError::NotFound { path });
                }
                create_store(&path)?;
            }
            Err(e) => return Err(open_error(&path, e)),
        }
        check_header(&path)?;
        let conn = open_connection(&path, options)?;
        tracing::debug!(path = %path.display(), "store opened");
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            conn,
            path: path.clone(),
            poisoned: None,
            counters: counters.clone(),
            max_batch: options.max_batch.max(1),
            max_batch_bytes: options.max_batch_bytes.max(1),
            _lock: lock,
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wsrm-store".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| open_error(&path, format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                counters,
                tx: Some(tx),
                thread: Some(thread),
                path,
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Commit counters (how well group commit batches).
    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    fn send(&self, req: Request) {
        if let Some(tx) = &self.shared.tx {
            // On failure the request (and its completion sender) is dropped: the completion
            // resolves to `StoreError::Closed`.
            let _ = tx.send(req);
        }
    }

    pub(crate) fn commit(&self, txn: Txn) -> Durable {
        let (c, done) = Completion::channel();
        self.send(Request::Write(txn, done));
        c
    }

    /// Runs `f` on the writer thread, outside any write transaction, after every earlier
    /// request.
    fn run<T, F>(&self, f: F) -> Completion<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, StoreError> + Send + 'static,
    {
        let (c, done) = Completion::channel();
        self.send(Request::Run(Box::new(move |w| {
            let _ = done.send(f(w));
        })));
        c
    }

    fn read<T, F>(&self, f: F) -> Completion<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.run(move |w| {
            f(&w.conn).map_err(|e| match classify(&w.path, &e) {
                (_, StoreError::Sqlite { reason }) if is_conversion(&e) => corrupt(&w.path, reason),
                (_, err) => err,
            })
        })
    }

    /// Runs an application read on the store's connection (outside any write transaction,
    /// after every earlier write completed), e.g. to read the tables the application writes
    /// in [`AppTx`]. `f` must not write.
    pub fn query<T, F>(&self, f: F) -> Completion<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.read(f)
    }

    pub(crate) fn flush(&self) -> Durable {
        self.run(|_| Ok(()))
    }

    pub(crate) fn remove_expired(&self, now: SystemTime) -> Completion<Vec<ExpiredSequence>> {
        self.run(move |w| w.remove_expired(now))
    }

    pub(crate) fn sources(&self) -> Completion<Vec<SourceInfo>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!("{SOURCE_SELECT} ORDER BY s.seq_id"))?;
            let rows = stmt.query_map([], source_row)?;
            rows.collect()
        })
    }

    pub(crate) fn source(&self, sequence: &SequenceId) -> Completion<Option<SourceInfo>> {
        let id = sequence.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!("{SOURCE_SELECT} WHERE s.seq_id = ?1"))?;
            stmt.query_row([id.as_str()], source_row).optional()
        })
    }

    pub(crate) fn unacked(
        &self,
        sequence: &SequenceId,
        after: u64,
        limit: usize,
    ) -> Completion<Vec<StoredMessage>> {
        let id = sequence.clone();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT number, envelope FROM source_msg WHERE seq_id = ?1 AND number > ?2
                 ORDER BY number LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id.as_str(), after, limit], |r| {
                Ok(StoredMessage {
                    number: u64_from(r.get(0)?)?,
                    envelope: Bytes::from(r.get::<_, Vec<u8>>(1)?),
                })
            })?;
            rows.collect()
        })
    }

    pub(crate) fn destinations(&self) -> Completion<Vec<DestInfo>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!("{DEST_SELECT} ORDER BY d.seq_id"))?;
            let rows = stmt.query_map([], dest_row)?;
            rows.collect()
        })
    }

    pub(crate) fn destination(&self, sequence: &SequenceId) -> Completion<Option<DestInfo>> {
        let id = sequence.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!("{DEST_SELECT} WHERE d.seq_id = ?1"))?;
            stmt.query_row([id.as_str()], dest_row).optional()
        })
    }

    pub(crate) fn undelivered(
        &self,
        sequence: &SequenceId,
        after: u64,
        limit: usize,
    ) -> Completion<Vec<PendingMessage>> {
        let id = sequence.clone();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT number, action, payload, last FROM dest_msg
                 WHERE seq_id = ?1 AND number > ?2 ORDER BY number LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id.as_str(), after, limit], |r| {
                Ok(PendingMessage {
                    number: u64_from(r.get(0)?)?,
                    action: r.get(1)?,
                    payload: Bytes::from(r.get::<_, Vec<u8>>(2)?),
                    last: r.get::<_, i64>(3)? != 0,
                })
            })?;
            rows.collect()
        })
    }

    pub(crate) fn cached_reply(
        &self,
        sequence: &SequenceId,
        request_number: u64,
    ) -> Completion<Option<CachedReply>> {
        let id = sequence.clone();
        let req = i64::try_from(request_number).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT request_number, reply_seq, reply_number, envelope FROM reply_cache
                 WHERE seq_id = ?1 AND request_number = ?2",
            )?;
            stmt.query_row(params![id.as_str(), req], reply_row)
                .optional()
        })
    }

    pub(crate) fn cached_replies(
        &self,
        sequence: &SequenceId,
        after: u64,
        limit: usize,
    ) -> Completion<Vec<CachedReply>> {
        let id = sequence.clone();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT request_number, reply_seq, reply_number, envelope FROM reply_cache
                 WHERE seq_id = ?1 AND request_number > ?2 ORDER BY request_number LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id.as_str(), after, limit], reply_row)?;
            rows.collect()
        })
    }

    pub(crate) fn cursor(&self, name: &str) -> Completion<Option<u64>> {
        let name = name.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT value FROM cursor WHERE name = ?1")?
                .query_row([name.as_str()], |r| u64_from(r.get(0)?))
                .optional()
        })
    }
}

fn is_conversion(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
    )
}

const SOURCE_SELECT: &str = "SELECT s.seq_id, s.version, s.remote, s.offered, s.label,
    s.expires_ms, s.inactivity_ms, s.extra, s.next_number, s.state, s.last_number,
    s.created_ms, s.activity_ms,
    (SELECT COUNT(*) FROM source_msg m WHERE m.seq_id = s.seq_id)
    FROM source_seq s";

fn source_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SourceInfo> {
    Ok(SourceInfo {
        record: SourceRecord {
            id: SequenceId::from(r.get::<_, String>(0)?),
            version: version_from(r.get(1)?)?,
            remote: r.get(2)?,
            offered: r.get::<_, Option<String>>(3)?.map(SequenceId::from),
            label: r.get(4)?,
            expires: r.get::<_, Option<i64>>(5)?.map(from_millis),
            inactivity_timeout: opt_duration(r.get(6)?),
            extra: Bytes::from(r.get::<_, Vec<u8>>(7)?),
        },
        next_number: u64_from(r.get(8)?)?,
        state: state_from(r.get(9)?)?,
        last_number: r.get::<_, Option<i64>>(10)?.map(u64_from).transpose()?,
        created: from_millis(r.get(11)?),
        last_activity: from_millis(r.get(12)?),
        unacked: u64_from(r.get(13)?)?,
    })
}

const DEST_SELECT: &str = "SELECT d.seq_id, d.version, d.acks_to, d.reply_seq, d.label,
    d.expires_ms, d.inactivity_ms, d.extra, d.ranges, d.state, d.last_number,
    d.created_ms, d.activity_ms, d.reply_next,
    (SELECT COUNT(*) FROM dest_msg m WHERE m.seq_id = d.seq_id),
    (SELECT MIN(number) FROM dest_msg m WHERE m.seq_id = d.seq_id)
    FROM dest_seq d";

fn dest_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DestInfo> {
    let ranges = ranges_column(r.get(8)?)?;
    let lowest: Option<i64> = r.get(15)?;
    let lowest = lowest.map(u64_from).transpose()?;
    Ok(DestInfo {
        record: DestRecord {
            id: SequenceId::from(r.get::<_, String>(0)?),
            version: version_from(r.get(1)?)?,
            acks_to: r.get(2)?,
            reply_sequence: r.get::<_, Option<String>>(3)?.map(SequenceId::from),
            label: r.get(4)?,
            expires: r.get::<_, Option<i64>>(5)?.map(from_millis),
            inactivity_timeout: opt_duration(r.get(6)?),
            extra: Bytes::from(r.get::<_, Vec<u8>>(7)?),
        },
        delivered_through: delivered_through(ranges.ranges(), lowest),
        ranges: ranges.ranges().to_vec(),
        state: state_from(r.get(9)?)?,
        last_number: r.get::<_, Option<i64>>(10)?.map(u64_from).transpose()?,
        created: from_millis(r.get(11)?),
        last_activity: from_millis(r.get(12)?),
        next_reply_number: u64_from(r.get(13)?)?,
        pending: u64_from(r.get(14)?)?,
    })
}

fn reply_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedReply> {
    Ok(CachedReply {
        request_number: u64_from(r.get(0)?)?,
        reply_sequence: SequenceId::from(r.get::<_, String>(1)?),
        reply_number: u64_from(r.get(2)?)?,
        envelope: Bytes::from(r.get::<_, Vec<u8>>(3)?),
    })
}

/// Takes the store's lock file. Read-only opens do not create it (a writer that is alive has
/// created it; a missing one means nobody holds the store).
fn acquire_lock(path: &Path, read_only: bool) -> Result<Option<File>, StoreError> {
    let lock = lock_path(path);
    let file = if read_only {
        match OpenOptions::new().read(true).open(&lock) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(open_error(
                    path,
                    format!("lock file {}: {e}", lock.display()),
                ))
            }
        }
    } else {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(|e| open_error(path, format!("lock file {}: {e}", lock.display())))?
    };
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(Some(file)),
        Err(fs4::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.to_path_buf(),
            lock,
        }),
        Err(fs4::TryLockError::Error(e)) => {
            Err(open_error(path, format!("locking {}: {e}", lock.display())))
        }
    }
}

/// Creates a complete, empty store at `path`: built under a temporary name, then renamed.
fn create_store(path: &Path) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".init");
    let tmp = PathBuf::from(tmp);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = tmp.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(PathBuf::from(p)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(open_error(path, e)),
        }
    }
    let build = || -> rusqlite::Result<()> {
        let conn = Connection::open_with_flags(
            &tmp,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // The rollback journal while building (one file to rename); WAL is switched on at
        // open and persists in the file header from then on.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = DELETE;
             PRAGMA synchronous = FULL;
             BEGIN;
             {SCHEMA_V1}
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = {SCHEMA_VERSION};
             COMMIT;"
        ))?;
        conn.close().map_err(|(_, e)| e)
    };
    build().map_err(|e| open_error(path, e))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| open_error(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| open_error(path, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Make the rename durable.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| open_error(path, e))?;
    tracing::info!(path = %path.display(), "created a new store");
    Ok(())
}

/// Refuses files that are not SQLite databases before SQLite sees them.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut f = File::open(path).map_err(|e| open_error(path, e))?;
    let mut header = [0u8; 100];
    let mut got = 0;
    while got < header.len() {
        match f.read(&mut header[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(open_error(path, e)),
        }
    }
    if got == 0 {
        return Err(corrupt(
            path,
            "the file is empty (a store is never empty: it was truncated)",
        ));
    }
    if got < header.len() || !header.starts_with(b"SQLite format 3\0") {
        return Err(corrupt(path, "not an SQLite database (bad header)"));
    }
    Ok(())
}

fn open_connection(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let flags = if options.read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        // No SQLITE_OPEN_CREATE: a file that vanished is an error, never a new empty store.
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_sqlite_error(path, &e))?;
    let setup = |conn: &Connection| -> rusqlite::Result<String> {
        if !options.read_only {
            // Read-only opens keep SQLite's normal locking: with locking_mode=EXCLUSIVE a
            // read-only connection cannot use a WAL database (no shared-memory index).
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        }
        let mode: String = if options.read_only {
            conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?
        } else {
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?
        };
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        Ok(mode)
    };
    let mode = setup(&conn).map_err(|e| open_sqlite_error(path, &e))?;
    if !options.read_only && !mode.eq_ignore_ascii_case("wal") {
        return Err(open_error(
            path,
            format!("cannot switch to WAL (journal_mode is {mode})"),
        ));
    }
    let app_id: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| open_sqlite_error(path, &e))?;
    if app_id != i64::from(APPLICATION_ID) {
        return Err(corrupt(
            path,
            format!("an SQLite database of another application (application_id {app_id:#x})"),
        ));
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| open_sqlite_error(path, &e))?;
    if version != SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if options.verify {
        let mut stmt = conn
            .prepare("PRAGMA quick_check(5)")
            .map_err(|e| open_sqlite_error(path, &e))?;
        let problems: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| open_sqlite_error(path, &e))?;
        if problems.len() != 1 || problems.first().map(String::as_str) != Some("ok") {
            return Err(corrupt(
                path,
                format!("integrity check: {}", problems.join("; ")),
            ));
        }
    }
    if let Some(max) = options.max_size_bytes {
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(|e| open_sqlite_error(path, &e))?;
        let pages = i64::try_from(max).unwrap_or(i64::MAX) / page_size.max(1);
        conn.pragma_update(None, "max_page_count", pages.max(1))
            .map_err(|e| open_sqlite_error(path, &e))?;
    }
    if !options.read_only {
        // Take the exclusive SQLite lock now (and keep it: locking_mode=EXCLUSIVE), so that no
        // other SQLite user writes underneath us either.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(|e| open_sqlite_error(path, &e))?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(r) => r,
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            match first {
                Request::Run(job) => {
                    // A panicking read closure (application code via `query`) drops its
                    // completion (the caller sees `Closed`) but not the writer.
                    if catch_unwind(AssertUnwindSafe(|| job(&mut self))).is_err() {
                        tracing::error!(path = %self.path.display(), "a store read panicked");
                    }
                }
                Request::Write(txn, done) => {
                    // Group commit: everything queued behind this write joins its transaction.
                    let mut bytes = txn.data_len();
                    let mut batch = vec![(txn, done)];
                    while batch.len() < self.max_batch && bytes < self.max_batch_bytes {
                        match rx.try_recv() {
                            Ok(Request::Write(t, d)) => {
                                bytes += t.data_len();
                                batch.push((t, d));
                            }
                            Ok(other) => {
                                carry = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_batch(batch);
                }
            }
        }
        match self.conn.close() {
            Ok(()) => tracing::debug!(path = %self.path.display(), "store closed"),
            Err((_, e)) => {
                tracing::warn!(path = %self.path.display(), error = %e, "closing the store failed")
            }
        }
    }

    fn poison(&mut self, err: &StoreError) {
        if self.poisoned.is_none() {
            tracing::error!(path = %self.path.display(), error = %err, "store write failed; refusing further writes");
            self.poisoned = Some(err.to_string());
        }
    }

    fn commit_batch(&mut self, batch: Vec<(Txn, Done)>) {
        if let Some(reason) = &self.poisoned {
            self.counters
                .failed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for (_, done) in batch {
                let _ = done.send(Err(StoreError::Poisoned {
                    reason: reason.clone(),
                }));
            }
            return;
        }
        let n = batch.len();
        let path = self.path.clone();
        let dests = std::cell::RefCell::new(HashMap::new());
        let ctx = Ctx {
            path: &path,
            dests: None,
        };
        let bare_ctx = Ctx {
            path: &path,
            dests: Some(&dests),
        };
        let mut outcomes: Vec<(Done, Result<(), StoreError>)> = Vec::with_capacity(n);
        let mut fatal: Option<StoreError> = None;
        let mut rest = batch.into_iter();
        match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Err(e) => fatal = Some(classify(&path, &e).1),
            Ok(mut tx) => {
                for (txn, done) in rest.by_ref() {
                    let bare = runs_without_savepoint(&txn);
                    let result = if bare && keeps_batch_dests(&txn) {
                        apply_bare(&bare_ctx, &tx, txn)
                    } else if let Err(e) = flush_dests(&ctx, &tx, &dests) {
                        Err(e)
                    } else if bare {
                        apply_bare(&ctx, &tx, txn)
                    } else {
                        match tx.savepoint() {
                            Err(e) => Err(ctx.sql(e)),
                            Ok(mut sp) => {
                                let r = apply_txn(&ctx, &sp, txn);
                                let gone = sp.is_autocommit();
                                match r {
                                    Ok(()) if !gone => sp.commit().map_err(|e| ctx.sql(e)),
                                    Ok(()) => Err(OpError::Fatal(StoreError::Io {
                                        reason: "the transaction was rolled back".into(),
                                    })),
                                    Err(OpError::Local(e)) if !gone => {
                                        sp.set_drop_behavior(rusqlite::DropBehavior::Rollback);
                                        match sp.finish() {
                                            Ok(()) => Err(OpError::Local(e)),
                                            Err(e2) => Err(ctx.sql(e2)),
                                        }
                                    }
                                    Err(OpError::Local(e)) => Err(OpError::Fatal(e)),
                                    Err(fatal) => Err(fatal),
                                }
                            }
                        }
                    };
                    match result {
                        Ok(()) => outcomes.push((done, Ok(()))),
                        Err(OpError::Local(e)) => outcomes.push((done, Err(e))),
                        Err(OpError::Fatal(e)) => {
                            outcomes.push((done, Err(fatal_copy(&e))));
                            fatal = Some(e);
                            break;
                        }
                    }
                }
                if fatal.is_none() {
                    if let Err(OpError::Local(e) | OpError::Fatal(e)) =
                        flush_dests(&ctx, &tx, &dests)
                    {
                        fatal = Some(e);
                    }
                }
                if fatal.is_none() {
                    if let Err(e) = tx.commit() {
                        fatal = Some(classify(&path, &e).1);
                    }
                } else {
                    tx.set_drop_behavior(rusqlite::DropBehavior::Rollback);
                    if let Err(e) = tx.finish() {
                        tracing::warn!(error = %e, "rolling back a failed batch failed");
                    }
                }
            }
        }
        match fatal {
            None => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                for (done, r) in outcomes {
                    let counter = if r.is_ok() {
                        &self.counters.transactions
                    } else {
                        &self.counters.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = done.send(r);
                }
            }
            Some(e) => {
                self.counters.failed.fetch_add(n as u64, Ordering::Relaxed);
                // Nothing of the batch is durable: every transaction in it fails.
                for (done, r) in outcomes {
                    let _ = done.send(match r {
                        Err(local) if !matches!(local, StoreError::Sqlite { .. }) => Err(local),
                        _ => Err(fatal_copy(&e)),
                    });
                }
                for (_, done) in rest {
                    let _ = done.send(Err(fatal_copy(&e)));
                }
                self.poison(&e);
            }
        }
    }

    fn remove_expired(&mut self, now: SystemTime) -> Result<Vec<ExpiredSequence>, StoreError> {
        if let Some(reason) = &self.poisoned {
            return Err(StoreError::Poisoned {
                reason: reason.clone(),
            });
        }
        let now_ms = to_millis(now);
        let path = self.path.clone();
        let work = |conn: &mut Connection| -> rusqlite::Result<Vec<ExpiredSequence>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::new();
            for (side, table) in [
                (Side::Source, "source_seq"),
                (Side::Destination, "dest_seq"),
            ] {
                let mut stmt = tx.prepare(&format!(
                    "SELECT seq_id, label, expires_ms IS NOT NULL AND expires_ms <= ?1 FROM {table}
                     WHERE (expires_ms IS NOT NULL AND expires_ms <= ?1)
                        OR (inactivity_ms IS NOT NULL AND activity_ms + inactivity_ms <= ?1)
                     ORDER BY seq_id"
                ))?;
                let rows = stmt.query_map([now_ms], |r| {
                    Ok(ExpiredSequence {
                        side,
                        id: SequenceId::from(r.get::<_, String>(0)?),
                        label: r.get(1)?,
                        reason: if r.get::<_, bool>(2)? {
                            ExpiryReason::Expires
                        } else {
                            ExpiryReason::Inactivity
                        },
                    })
                })?;
                for row in rows {
                    out.push(row?);
                }
            }
            for e in &out {
                let id = e.id.as_str();
                match e.side {
                    Side::Source => {
                        tx.execute("DELETE FROM source_msg WHERE seq_id = ?1", [id])?;
                        tx.execute("DELETE FROM source_seq WHERE seq_id = ?1", [id])?;
                    }
                    Side::Destination => remove_dest(&tx, id)?,
                }
            }
            tx.commit()?;
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        };
        match work(&mut self.conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                let (is_fatal, err) = classify(&path, &e);
                if is_fatal {
                    self.poison(&err);
                }
                Err(err)
            }
        }
    }
}

/// A fresh copy of a batch-level error for each transaction of the batch.
fn fatal_copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Full { reason } => StoreError::Full {
            reason: reason.clone(),
        },
        StoreError::ReadOnly { reason } => StoreError::ReadOnly {
            reason: reason.clone(),
        },
        StoreError::Corrupt { path, reason } => StoreError::Corrupt {
            path: path.clone(),
            reason: reason.clone(),
        },
        other => StoreError::Io {
            reason: other.to_string(),
        },
    }
}

fn remove_dest(c: &Connection, id: &str) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM dest_msg WHERE seq_id = ?1")?
        .execute([id])?;
    c.prepare_cached("DELETE FROM reply_cache WHERE seq_id = ?1")?
        .execute([id])?;
    c.prepare_cached("DELETE FROM dest_seq WHERE seq_id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Whether a transaction can run without its own savepoint: a single op that is not
/// application code (or a message recorded with its input cursor). Such an op checks everything that can refuse it (unknown sequence,
/// number out of range, not pending, ...) before it writes, so a refusal leaves nothing
/// behind; a savepoint per transaction costs two parsed statements and a sub-journal copy of
/// every page the op touches, which was the largest part of the writer's work per message.
fn runs_without_savepoint(txn: &Txn) -> bool {
    matches!(
        txn.ops(),
        [Op::Received { .. }
            | Op::Deliver { app: None, .. }
            | Op::RecordSent { .. }
            | Op::SourceAcked { .. }
            | Op::Touch { .. }
            | Op::SetCursor { .. }]
            // `record_sent_with_cursor`: setting a cursor cannot be refused, so nothing can
            // fail after the message row is written.
            | [Op::RecordSent { .. }, Op::SetCursor { .. }]
    )
}

/// Whether a bare ([`runs_without_savepoint`]) transaction leaves the batch's cached
/// destination rows valid: of those, only `Touch` writes a `dest_seq` column the cache holds
/// (the activity time).
fn keeps_batch_dests(txn: &Txn) -> bool {
    !matches!(txn.ops(), [Op::Touch { .. }])
}

/// Runs a [`runs_without_savepoint`] transaction directly in the batch's transaction. Should
/// it ever fail after it changed a row, the batch cannot undo just this transaction: that
/// failure is fatal for the batch (nothing of it is committed), never a partial write.
fn apply_bare(ctx: &Ctx<'_>, c: &Connection, txn: Txn) -> Result<(), OpError> {
    let before = c.total_changes();
    let r = apply_txn(ctx, c, txn);
    if c.is_autocommit() {
        // SQLite rolled the whole transaction back (e.g. SQLITE_FULL in some states).
        return Err(OpError::Fatal(match r {
            Err(OpError::Local(e)) | Err(OpError::Fatal(e)) => e,
            Ok(()) => StoreError::Io {
                reason: "the transaction was rolled back".into(),
            },
        }));
    }
    match r {
        Err(OpError::Local(e)) if c.total_changes() != before => Err(OpError::Fatal(e)),
        r => r,
    }
}

fn insert_received(
    ctx: &Ctx<'_>,
    c: &Connection,
    sequence: &SequenceId,
    n: i64,
    action: &str,
    payload: &[u8],
    last: bool,
) -> Result<(), OpError> {
    c.prepare_cached(
        "INSERT INTO dest_msg (seq_id, number, action, payload, last)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![sequence.as_str(), n, action, payload, last]))
    .map(|_| ())
    .map_err(|e| ctx.sql(e))
}

/// `Received` inside a batch's bare ops: the sequence row is read once per batch and written
/// back by [`flush_dests`]; only the message row is inserted here. Checks come before the
/// insert, so a refusal changes nothing.
#[allow(clippy::too_many_arguments)]
fn received_batched(
    ctx: &Ctx<'_>,
    c: &Connection,
    dests: &std::cell::RefCell<HashMap<SequenceId, BatchDest>>,
    sequence: SequenceId,
    n: i64,
    action: &str,
    payload: Bytes,
    last: bool,
    at: i64,
) -> Result<(), OpError> {
    let mut map = dests.borrow_mut();
    if !map.contains_key(&sequence) {
        let ranges: Option<String> = c
            .prepare_cached("SELECT ranges FROM dest_seq WHERE seq_id = ?1")
            .and_then(|mut s| s.query_row([sequence.as_str()], |r| r.get(0)).optional())
            .map_err(|e| ctx.sql(e))?;
        let Some(ranges) = ranges else {
            return Err(unknown(sequence));
        };
        let set = decode_ranges(&ranges).ok_or_else(|| {
            OpError::Fatal(corrupt(ctx.path, format!("malformed ranges {ranges:?}")))
        })?;
        map.insert(
            sequence.clone(),
            BatchDest {
                ranges: set,
                activity_ms: at,
                last_number: None,
                dirty: false,
            },
        );
    }
    let Some(d) = map.get_mut(&sequence) else {
        return Err(unknown(sequence));
    };
    let number = u64::try_from(n).unwrap_or(0);
    super::check_receive_ahead(number, &d.ranges)?;
    if !d.ranges.contains(number) {
        insert_received(ctx, c, &sequence, n, action, &payload, last)?;
        d.ranges.insert(number);
        if last {
            d.last_number = Some(n);
        }
    }
    d.activity_ms = at;
    d.dirty = true;
    Ok(())
}

fn unknown(sequence: SequenceId) -> OpError {
    OpError::Local(StoreError::UnknownSequence { sequence })
}

fn apply_txn(ctx: &Ctx<'_>, c: &Connection, txn: Txn) -> Result<(), OpError> {
    let (ops, at) = txn.into_parts();
    let at = to_millis(at);
    for op in ops {
        apply_op(ctx, c, op, at)?;
    }
    Ok(())
}

fn run_app(ctx: &Ctx<'_>, c: &Connection, app: AppWrite) -> Result<(), OpError> {
    let tx = AppTx { conn: Some(c) };
    match catch_unwind(AssertUnwindSafe(|| app(&tx))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => match e
            .downcast_ref::<rusqlite::Error>()
            .map(|se| classify(ctx.path, se))
        {
            // The application hit a store-level failure (full disk, I/O): fatal for the batch.
            Some((true, err)) => Err(OpError::Fatal(err)),
            _ => Err(OpError::Local(StoreError::App(e))),
        },
        Err(_) => Err(OpError::Local(StoreError::App(
            "application write panicked".into(),
        ))),
    }
}

fn apply_op(ctx: &Ctx<'_>, c: &Connection, op: Op, at: i64) -> Result<(), OpError> {
    let sql = |e| ctx.sql(e);
    match op {
        Op::CreateSource(r) => {
            let exists = c
                .prepare_cached("SELECT 1 FROM source_seq WHERE seq_id = ?1")
                .and_then(|mut s| s.exists([r.id.as_str()]))
                .map_err(sql)?;
            if exists {
                return Err(OpError::Local(StoreError::SequenceExists {
                    sequence: r.id,
                }));
            }
            c.prepare_cached(
                "INSERT INTO source_seq (seq_id, version, remote, offered, label, expires_ms,
                 inactivity_ms, extra, next_number, state, last_number, created_ms, activity_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, 0, NULL, ?9, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.id.as_str(),
                    version_code(r.version),
                    r.remote,
                    r.offered.as_ref().map(SequenceId::as_str),
                    r.label,
                    r.expires.map(to_millis),
                    r.inactivity_timeout.map(duration_millis),
                    r.extra.as_ref(),
                    at
                ])
            })
            .map_err(sql)?;
        }
        Op::RecordSent {
            sequence,
            number,
            envelope,
        } => {
            let n = num(number)?;
            let next: Option<i64> = c
                .prepare_cached("SELECT next_number FROM source_seq WHERE seq_id = ?1")
                .and_then(|mut s| s.query_row([sequence.as_str()], |r| r.get(0)).optional())
                .map_err(sql)?;
            let Some(next) = next else {
                return Err(unknown(sequence));
            };
            if n >= next {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO source_msg (seq_id, number, envelope) VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![sequence.as_str(), n, envelope.as_ref()]))
                .map_err(sql)?;
                c.prepare_cached("UPDATE source_seq SET next_number = ?2 WHERE seq_id = ?1")
                    .and_then(|mut s| s.execute(params![sequence.as_str(), n.saturating_add(1)]))
                    .map_err(sql)?;
            }
        }
        Op::SourceAcked { sequence, ranges } => {
            check_ranges(&ranges)?;
            let changed = c
                .prepare_cached("UPDATE source_seq SET activity_ms = ?2 WHERE seq_id = ?1")
                .and_then(|mut s| s.execute(params![sequence.as_str(), at]))
                .map_err(sql)?;
            if changed == 0 {
                return Err(unknown(sequence));
            }
            let mut del = c
                .prepare_cached(
                    "DELETE FROM source_msg WHERE seq_id = ?1 AND number BETWEEN ?2 AND ?3",
                )
                .map_err(sql)?;
            for (l, u) in ranges {
                del.execute(params![sequence.as_str(), num(l)?, num(u)?])
                    .map_err(sql)?;
            }
        }
        Op::SourceState {
            sequence,
            state,
            last_number,
        } => {
            let last = last_number.map(num).transpose()?;
            let changed = c
                .prepare_cached(
                    "UPDATE source_seq SET state = ?2, last_number = COALESCE(?3, last_number)
                     WHERE seq_id = ?1",
                )
                .and_then(|mut s| s.execute(params![sequence.as_str(), state.code(), last]))
                .map_err(sql)?;
            if changed == 0 {
                return Err(unknown(sequence));
            }
        }
        Op::RemoveSource { sequence } => {
            c.prepare_cached("DELETE FROM source_msg WHERE seq_id = ?1")
                .and_then(|mut s| s.execute([sequence.as_str()]))
                .map_err(sql)?;
            c.prepare_cached("DELETE FROM source_seq WHERE seq_id = ?1")
                .and_then(|mut s| s.execute([sequence.as_str()]))
                .map_err(sql)?;
        }
        Op::SetCursor { name, value } => {
            let v = i64::try_from(value).map_err(|_| StoreError::Invalid {
                reason: format!("cursor value {value} too large"),
            })?;
            c.prepare_cached("INSERT OR REPLACE INTO cursor (name, value) VALUES (?1, ?2)")
                .and_then(|mut s| s.execute(params![name, v]))
                .map_err(sql)?;
        }
        Op::RemoveCursor { name } => {
            c.prepare_cached("DELETE FROM cursor WHERE name = ?1")
                .and_then(|mut s| s.execute([name]))
                .map_err(sql)?;
        }
        Op::CreateDest(r) => {
            let exists = c
                .prepare_cached("SELECT 1 FROM dest_seq WHERE seq_id = ?1")
                .and_then(|mut s| s.exists([r.id.as_str()]))
                .map_err(sql)?;
            if exists {
                return Err(OpError::Local(StoreError::SequenceExists {
                    sequence: r.id,
                }));
            }
            c.prepare_cached(
                "INSERT INTO dest_seq (seq_id, version, acks_to, reply_seq, label, expires_ms,
                 inactivity_ms, extra, ranges, reply_next, state, last_number, created_ms,
                 activity_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', 1, 0, NULL, ?9, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    r.id.as_str(),
                    version_code(r.version),
                    r.acks_to,
                    r.reply_sequence.as_ref().map(SequenceId::as_str),
                    r.label,
                    r.expires.map(to_millis),
                    r.inactivity_timeout.map(duration_millis),
                    r.extra.as_ref(),
                    at
                ])
            })
            .map_err(sql)?;
        }
        Op::Received {
            sequence,
            number,
            action,
            payload,
            last,
        } => {
            let n = num(number)?;
            if let Some(dests) = ctx.dests {
                return received_batched(ctx, c, dests, sequence, n, &action, payload, last, at);
            }
            let ranges: Option<String> = c
                .prepare_cached("SELECT ranges FROM dest_seq WHERE seq_id = ?1")
                .and_then(|mut s| s.query_row([sequence.as_str()], |r| r.get(0)).optional())
                .map_err(sql)?;
            let Some(ranges) = ranges else {
                return Err(unknown(sequence));
            };
            let mut set = decode_ranges(&ranges).ok_or_else(|| {
                OpError::Fatal(corrupt(ctx.path, format!("malformed ranges {ranges:?}")))
            })?;
            super::check_receive_ahead(number, &set)?;
            if set.insert(number) {
                insert_received(ctx, c, &sequence, n, &action, &payload, last)?;
                c.prepare_cached(
                    "UPDATE dest_seq SET ranges = ?2, activity_ms = ?3,
                     last_number = CASE WHEN ?4 THEN ?5 ELSE last_number END WHERE seq_id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![sequence.as_str(), encode_ranges(&set), at, last, n])
                })
                .map_err(sql)?;
            } else {
                c.prepare_cached("UPDATE dest_seq SET activity_ms = ?2 WHERE seq_id = ?1")
                    .and_then(|mut s| s.execute(params![sequence.as_str(), at]))
                    .map_err(sql)?;
            }
        }
        Op::DestState {
            sequence,
            state,
            last_number,
        } => {
            let last = last_number.map(num).transpose()?;
            let changed = c
                .prepare_cached(
                    "UPDATE dest_seq SET state = ?2, last_number = COALESCE(?3, last_number),
                     activity_ms = ?4 WHERE seq_id = ?1",
                )
                .and_then(|mut s| s.execute(params![sequence.as_str(), state.code(), last, at]))
                .map_err(sql)?;
            if changed == 0 {
                return Err(unknown(sequence));
            }
        }
        Op::Deliver {
            sequence,
            number,
            app,
        } => {
            let n = num(number)?;
            let removed = c
                .prepare_cached("DELETE FROM dest_msg WHERE seq_id = ?1 AND number = ?2")
                .and_then(|mut s| s.execute(params![sequence.as_str(), n]))
                .map_err(sql)?;
            if removed == 0 {
                let known = c
                    .prepare_cached("SELECT 1 FROM dest_seq WHERE seq_id = ?1")
                    .and_then(|mut s| s.exists([sequence.as_str()]))
                    .map_err(sql)?;
                if !known {
                    return Err(unknown(sequence));
                }
                return Err(OpError::Local(StoreError::NotPending { sequence, number }));
            }
            if let Some(app) = app {
                run_app(ctx, c, app)?;
            }
        }
        Op::CacheReply { sequence, reply } => {
            let req = num(reply.request_number)?;
            let rn = num(reply.reply_number)?;
            let known = c
                .prepare_cached(
                    "UPDATE dest_seq SET reply_next = MAX(reply_next, ?2) WHERE seq_id = ?1",
                )
                .and_then(|mut s| s.execute(params![sequence.as_str(), rn.saturating_add(1)]))
                .map_err(sql)?;
            if known == 0 {
                return Err(unknown(sequence));
            }
            c.prepare_cached(
                "INSERT OR REPLACE INTO reply_cache (seq_id, request_number, reply_seq,
                 reply_number, envelope) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    sequence.as_str(),
                    req,
                    reply.reply_sequence.as_str(),
                    rn,
                    reply.envelope.as_ref()
                ])
            })
            .map_err(sql)?;
        }
        Op::RepliesAcked {
            reply_sequence,
            ranges,
        } => {
            check_ranges(&ranges)?;
            let mut del = c
                .prepare_cached(
                    "DELETE FROM reply_cache WHERE reply_seq = ?1 AND reply_number BETWEEN ?2 AND ?3",
                )
                .map_err(sql)?;
            for (l, u) in ranges {
                del.execute(params![reply_sequence.as_str(), num(l)?, num(u)?])
                    .map_err(sql)?;
            }
        }
        Op::RemoveDest { sequence } => remove_dest(c, sequence.as_str()).map_err(sql)?,
        Op::Touch { sequence } => {
            for table in ["source_seq", "dest_seq"] {
                c.prepare_cached(&format!(
                    "UPDATE {table} SET activity_ms = ?2 WHERE seq_id = ?1"
                ))
                .and_then(|mut s| s.execute(params![sequence.as_str(), at]))
                .map_err(sql)?;
            }
        }
        Op::App(app) => run_app(ctx, c, app)?,
    }
    Ok(())
}
