//! Durable sessions (issue 6): the glue between the engine and a [`Store`].
//!
//! ## Service side: store first, then the engine, then the answer
//! * A sequence message of a stored inbound sequence is written to the store (`Received`)
//!   and the write awaited *before* the engine sees it. The engine only ever acknowledges
//!   what it was fed, so every acknowledgement covers durable messages only. Concurrent
//!   exchanges share one fsync (the store's group commit).
//! * Every other write (a new sequence, a delivery with the application's own writes, a
//!   cached reply, a removed sequence) goes into one ordered *pipeline*; an answer that
//!   depends on such writes — a CreateSequenceResponse, a reply — is queued behind the writes
//!   submitted before it and leaves only when they are durable. A CreateSequenceResponse
//!   therefore never names a sequence the store does not hold, and a reply never leaves
//!   before the delivery of its request and the reply itself are committed. Plain
//!   acknowledgements, faults and empty answers leave at once: they only cover received
//!   messages, already durable.
//! * After a store failure that may have lost a write (full disk, read-only, I/O error), no
//!   further answer carries anything: exchanges get an empty 202 (or 503 when the message
//!   itself could not be stored), so nothing that is not durable is ever acknowledged.
//!
//! ## Client side
//! See [`crate::client`]'s `store` option: each message's envelope is recorded before its first
//! transmission, retransmissions send the stored bytes, acknowledgements delete them, and
//! `Client::resume` continues a stored sequence after a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use wsrm_proto::msg::{Action, Body, Message, RmVersion, SequenceId};
use wsrm_proto::snapshot::{DestSnapshot, SnapshotMessage, SnapshotReply};
use wsrm_proto::{Endpoint, WSA10_ANONYMOUS};

use crate::binding::MessageVersion;
use crate::codec;
use crate::store::{
    AppWrite, CachedReply, DestRecord, Durable, Op, SequenceState, Store, StoreError, Txn,
};

/// Page size of recovery reads.
const PAGE: usize = 1024;

/// A received message's action as stored: followed, after a space, by the message ID it
/// carries for later (a request's MessageID on the service, a reply's RelatesTo on a client).
/// Action URIs contain no space.
pub(crate) fn stored_action(action: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{action} {id}"),
        None => action.to_owned(),
    }
}

/// A stored received message back as a snapshot message; `message_id` is the ID stored with
/// its action ([`stored_action`]).
pub(crate) fn snapshot_message(p: crate::store::PendingMessage) -> SnapshotMessage {
    let (action, id) = match p.action.split_once(' ') {
        Some((a, m)) => (a, Some(Arc::from(m))),
        None => (p.action.as_str(), None),
    };
    SnapshotMessage {
        number: p.number,
        action: Arc::from(action),
        payload: p.payload,
        message_id: id,
    }
}

/// Whether an error means a write may have been lost (the store refuses further writes).
pub(crate) fn is_fatal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::ReadOnly { .. }
            | StoreError::Full { .. }
            | StoreError::Io { .. }
            | StoreError::Poisoned { .. }
            | StoreError::Closed
            | StoreError::Sqlite { .. }
    )
}

enum Pipe {
    Write(Durable, &'static str),
    Respond(oneshot::Sender<Option<Message>>, Option<Box<Message>>),
}

/// The service's store glue (one per service; shared by the HTTP front and the driver).
pub(crate) struct DurableService {
    store: Store,
    pipe: mpsc::UnboundedSender<Pipe>,
    failed: Arc<AtomicBool>,
    version: MessageVersion,
    /// Sessions restored from the store (already recorded: no CreateDest).
    restored: std::sync::Mutex<std::collections::HashSet<SequenceId>>,
    /// The inbound sequences of this service's sessions (restored or created, not ended).
    /// Only their messages are written: a store shared with durable clients also holds their
    /// reply sequences, which a message sent here must not touch.
    owned: std::sync::Mutex<std::collections::HashSet<SequenceId>>,
}

impl std::fmt::Debug for DurableService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableService")
            .field("durable", &self.store.is_durable())
            .finish()
    }
}

impl DurableService {
    /// Starts the ordered pipeline task.
    pub(crate) fn new(
        store: Store,
        version: MessageVersion,
        restored: Vec<SequenceId>,
    ) -> Arc<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pipe>();
        let failed = Arc::new(AtomicBool::new(false));
        let f = failed.clone();
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                match item {
                    Pipe::Write(d, what) => {
                        if let Err(e) = d.await {
                            if is_fatal(&e) {
                                if !f.swap(true, Ordering::SeqCst) {
                                    tracing::error!(error = %e, what, "store write failed; no further acknowledgements are sent");
                                }
                            } else {
                                tracing::warn!(error = %e, what, "store write refused");
                            }
                        }
                    }
                    Pipe::Respond(tx, m) => {
                        let ok = !f.load(Ordering::SeqCst);
                        let _ = tx.send(if ok { m.map(|b| *b) } else { None });
                    }
                }
            }
        });
        Arc::new(DurableService {
            store,
            pipe: tx,
            failed,
            version,
            owned: std::sync::Mutex::new(restored.iter().cloned().collect()),
            restored: std::sync::Mutex::new(restored.into_iter().collect()),
        })
    }

    /// Whether a write failed in a way that may have lost it.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn push(&self, d: Durable, what: &'static str) {
        let _ = self.pipe.send(Pipe::Write(d, what));
    }

    /// Stores a sequence message of a stored inbound sequence before the engine sees it.
    /// `Err` = it could not be stored: do not feed it to the engine, acknowledge nothing.
    pub(crate) async fn before_engine(&self, m: &Message) -> Result<(), StoreError> {
        let target = match (&m.body, &m.sequence) {
            (Body::CloseSequence { identifier, .. }, _) => identifier,
            (_, Some(seq)) => &seq.identifier,
            _ => return Ok(()),
        };
        if !self.owned.lock().is_ok_and(|o| o.contains(target)) {
            // Not one of this service's sequences: the engine answers UnknownSequence.
            return Ok(());
        }
        if let Body::CloseSequence {
            identifier,
            last_msg_number,
        } = &m.body
        {
            // 1.1: the sequence takes no further message, also after a restart (restored with
            // its last number, a later number gets SequenceClosed).
            let closed =
                self.store
                    .set_dest_state(identifier, SequenceState::Closed, *last_msg_number);
            return self.stored(closed.await, "cannot store a CloseSequence");
        }
        let Some(seq) = &m.sequence else {
            return Ok(());
        };
        let (action, payload, empty_last) = match (&m.action, &m.body) {
            // The request's MessageID rides in the stored action after a space (action URIs
            // have none), so a restored request is still answered as a two-way operation.
            (Action::Other(a), Body::Application(b)) => {
                (stored_action(a, m.message_id.as_deref()), b.clone(), false)
            }
            (Action::LastMessage, Body::Empty) => (String::new(), Bytes::new(), true),
            _ => return Ok(()),
        };
        let mut txn = Txn::new().with(Op::Received {
            sequence: seq.identifier.clone(),
            number: seq.number,
            action,
            payload,
            last: seq.last_message,
        });
        if empty_last {
            // The empty 1.0 LastMessage is never handed to the application.
            txn.push(Op::Deliver {
                sequence: seq.identifier.clone(),
                number: seq.number,
                app: None,
            });
        }
        self.stored(
            self.store.commit(txn).await,
            "cannot store a received message; it is not acknowledged",
        )
    }

    /// The outcome of a write before the engine sees its message.
    fn stored(&self, r: Result<(), StoreError>, what: &'static str) -> Result<(), StoreError> {
        match r {
            Ok(()) => Ok(()),
            // Not a stored sequence (the engine answers UnknownSequence), a number out of
            // range (the engine faults), or already received and delivered (LastMessage).
            Err(StoreError::UnknownSequence { .. })
            | Err(StoreError::Invalid { .. })
            | Err(StoreError::NotPending { .. }) => Ok(()),
            Err(e) => {
                if is_fatal(&e) && !self.failed.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, "{what}");
                }
                Err(e)
            }
        }
    }

    /// A new session: the sequence is recorded before its CreateSequenceResponse leaves.
    pub(crate) fn session_created(
        &self,
        version: RmVersion,
        input: &SequenceId,
        output: Option<&SequenceId>,
        inactivity: std::time::Duration,
    ) {
        if let Ok(mut o) = self.owned.lock() {
            o.insert(input.clone());
        }
        if self.restored.lock().is_ok_and(|mut r| r.remove(input)) {
            return;
        }
        let mut r = DestRecord::new(input.clone(), version, WSA10_ANONYMOUS);
        r.reply_sequence = output.cloned();
        r.inactivity_timeout = Some(inactivity);
        self.push(self.store.create_dest(r), "create sequence");
    }

    /// The answer of an exchange: sent once every write submitted before it is durable.
    pub(crate) fn respond(&self, tx: oneshot::Sender<Option<Message>>, m: Option<Message>) {
        // Acknowledgements, faults and empty answers only cover received messages, which were
        // durable before the engine saw them: they need not wait. A CreateSequenceResponse
        // (the new sequence) and replies (the delivery and the cached reply) do.
        let wait = m.as_ref().is_some_and(|m| {
            matches!(
                m.body,
                Body::CreateSequenceResponse(_) | Body::Application(_)
            ) || m.sequence.is_some()
        });
        if !wait {
            let _ = tx.send(m);
            return;
        }
        if let Err(mpsc::error::SendError(Pipe::Respond(tx, m))) =
            self.pipe.send(Pipe::Respond(tx, m.map(Box::new)))
        {
            let _ = tx.send(if self.has_failed() {
                None
            } else {
                m.map(|b| *b)
            });
        }
    }

    /// The handler finished message `number`: commit its delivery with the application's
    /// writes (and, for a request, the reply to replay after a restart).
    pub(crate) fn delivered(
        &self,
        sequence: &SequenceId,
        number: u64,
        app: Option<AppWrite>,
        reply: Option<(&SequenceId, u64, &Message)>,
    ) {
        let mut txn = Txn::new().with(Op::Deliver {
            sequence: sequence.clone(),
            number,
            app,
        });
        if let Some((reply_sequence, reply_number, m)) = reply {
            match codec::encode(m, self.version) {
                Ok(enc) => txn.push(Op::CacheReply {
                    sequence: sequence.clone(),
                    reply: CachedReply {
                        request_number: number,
                        reply_sequence: reply_sequence.clone(),
                        reply_number,
                        envelope: enc.body,
                    },
                }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a reply for the store");
                    &mut txn
                }
            };
        }
        self.push(self.store.commit(txn), "delivery");
    }

    /// The client acknowledged replies (request-reply): their cached copies go.
    pub(crate) fn replies_acked(&self, reply_sequence: &SequenceId, ranges: &[(u64, u64)]) {
        if !ranges.is_empty() {
            self.push(
                self.store.replies_acked(reply_sequence, ranges),
                "replies acknowledged",
            );
        }
    }

    /// The session ended and its handler is done: forget the sequence.
    pub(crate) fn session_ended(&self, sequence: &SequenceId) {
        if let Ok(mut o) = self.owned.lock() {
            o.remove(sequence);
        }
        self.push(self.store.remove_dest(sequence), "remove sequence");
    }
}

/// Rebuilds the service's sessions from the store: expired sequences are removed first; then
/// each stored inbound sequence is restored with its undelivered messages (read a page at a
/// time) and cached replies. Returns the sequences restored.
pub(crate) async fn restore_service(
    store: &Store,
    endpoint: &mut Endpoint,
    max_body: usize,
) -> Result<Vec<SequenceId>, StoreError> {
    let expired = store.remove_expired(SystemTime::now()).await?;
    for e in &expired {
        tracing::info!(sequence = %e.id, reason = ?e.reason, side = ?e.side, "expired stored sequence removed");
    }
    let now = std::time::Instant::now();
    let mut restored = Vec::new();
    // A store shared with durable request-reply clients also holds their reply sequences
    // (as destinations named by a source's `offered`): those are not the service's.
    let client_replies: std::collections::HashSet<SequenceId> = store
        .sources()
        .await?
        .into_iter()
        .filter_map(|s| s.record.offered)
        .collect();
    for d in store.destinations().await? {
        if client_replies.contains(&d.record.id) {
            continue;
        }
        let id = d.record.id.clone();
        let mut snap = DestSnapshot::new(id.clone(), d.record.version);
        snap.acks_to =
            (d.record.acks_to != WSA10_ANONYMOUS).then(|| Arc::from(d.record.acks_to.as_str()));
        snap.reply_sequence = d.record.reply_sequence.clone();
        snap.ranges = d.ranges.clone();
        snap.last_number = match (d.state, d.last_number) {
            // Closed by a CloseSequence without LastMsgNumber: the last is what was received.
            (SequenceState::Closed, None) => Some(d.ranges.last().map_or(0, |r| r.1)),
            (_, last) => last,
        };
        snap.delivered_through = d.delivered_through;
        snap.next_reply_number = d.next_reply_number;
        let mut after = 0;
        loop {
            let page = store.undelivered(&id, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.number;
            snap.undelivered
                .extend(page.into_iter().map(snapshot_message));
        }
        let mut after = 0;
        loop {
            let page = store.cached_replies(&id, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.request_number;
            for r in page {
                match codec::decode(&r.envelope, max_body.max(r.envelope.len())) {
                    Ok((message, _)) => snap.cached_replies.push(SnapshotReply {
                        request_number: r.request_number,
                        reply_number: r.reply_number,
                        message,
                    }),
                    Err(e) => {
                        tracing::warn!(sequence = %id, request = r.request_number, error = %e, "stored reply cannot be decoded; dropped")
                    }
                }
            }
        }
        let pending = snap.undelivered.len();
        match endpoint.restore_session(now, snap) {
            Ok(_) => {
                restored.push(id.clone());
                tracing::info!(sequence = %id, pending, ranges = ?d.ranges, "session restored from the store");
            }
            Err(e) => {
                tracing::error!(sequence = %id, error = %e, "stored session cannot be restored")
            }
        }
    }
    Ok(restored)
}
