//! The volatile store: WCF's behaviour (everything is lost when the process ends), with the
//! same semantics as the SQLite store inside one process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use wsrm_proto::msg::SequenceId;
use wsrm_proto::ranges::RangeSet;

use super::{
    check_number, check_ranges, delivered_through, inactivity_deadline, AppTx, CachedReply,
    DestInfo, DestRecord, ExpiredSequence, ExpiryReason, Op, PendingMessage, SequenceState, Side,
    SourceInfo, SourceRecord, StoreError, StoredMessage, Txn,
};

#[derive(Clone, Debug)]
struct MemSource {
    record: SourceRecord,
    next_number: u64,
    state: SequenceState,
    last_number: Option<u64>,
    created: SystemTime,
    activity: SystemTime,
    msgs: BTreeMap<u64, Bytes>,
}

#[derive(Clone, Debug)]
struct MemDest {
    record: DestRecord,
    ranges: RangeSet,
    state: SequenceState,
    last_number: Option<u64>,
    created: SystemTime,
    activity: SystemTime,
    pending: BTreeMap<u64, PendingMessage>,
    /// Cached replies by request number.
    replies: BTreeMap<u64, CachedReply>,
    reply_next: u64,
}

#[derive(Default, Debug)]
struct MemState {
    sources: HashMap<SequenceId, MemSource>,
    dests: HashMap<SequenceId, MemDest>,
    cursors: HashMap<String, u64>,
    /// Reply sequence → the inbound sequences that cached replies on it.
    reply_owners: HashMap<SequenceId, HashSet<SequenceId>>,
}

/// What a multi-op transaction may change, saved to undo it on failure.
struct Undo {
    sources: Vec<(SequenceId, Option<MemSource>)>,
    dests: Vec<(SequenceId, Option<MemDest>)>,
    cursors: Vec<(String, Option<u64>)>,
}

/// The in-memory store (WCF-compatible volatile mode). Cloning gives another handle on the
/// same state.
#[derive(Clone, Default, Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<MemState>>,
}

impl MemoryStore {
    /// A new, empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        // A panic while locked can only come from an application closure, which runs under
        // `catch_unwind`; the state is consistent either way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn commit(&self, txn: Txn) -> Result<(), StoreError> {
        let (ops, at) = txn.into_parts();
        let mut st = self.lock();
        if ops.len() == 1 {
            // Every op validates before it mutates: a single op needs no undo log.
            let mut ops = ops;
            return match ops.pop() {
                Some(op) => st.apply(op, at),
                None => Ok(()),
            };
        }
        let undo = st.snapshot(&ops);
        for op in ops {
            if let Err(e) = st.apply(op, at) {
                st.restore(undo);
                return Err(e);
            }
        }
        Ok(())
    }

    pub(crate) fn remove_expired(&self, now: SystemTime) -> Vec<ExpiredSequence> {
        let mut st = self.lock();
        let mut out = Vec::new();
        for (id, s) in &st.sources {
            if let Some(reason) = expiry(
                s.record.expires,
                s.record.inactivity_timeout,
                s.activity,
                now,
            ) {
                out.push(ExpiredSequence {
                    side: Side::Source,
                    id: id.clone(),
                    label: s.record.label.clone(),
                    reason,
                });
            }
        }
        for (id, d) in &st.dests {
            if let Some(reason) = expiry(
                d.record.expires,
                d.record.inactivity_timeout,
                d.activity,
                now,
            ) {
                out.push(ExpiredSequence {
                    side: Side::Destination,
                    id: id.clone(),
                    label: d.record.label.clone(),
                    reason,
                });
            }
        }
        for e in &out {
            match e.side {
                Side::Source => {
                    st.sources.remove(&e.id);
                }
                Side::Destination => st.remove_dest(&e.id),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub(crate) fn sources(&self) -> Vec<SourceInfo> {
        let st = self.lock();
        let mut v: Vec<SourceInfo> = st.sources.values().map(source_info).collect();
        v.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        v
    }

    pub(crate) fn source(&self, sequence: &SequenceId) -> Option<SourceInfo> {
        self.lock().sources.get(sequence).map(source_info)
    }

    pub(crate) fn unacked(
        &self,
        sequence: &SequenceId,
        after: u64,
        limit: usize,
    ) -> Vec<StoredMessage> {
        let st = self.lock();
        match st.sources.get(sequence) {
            Some(s) => s
                .msgs
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(&number, envelope)| StoredMessage {
                    number,
                    envelope: envelope.clone(),
                })
                .collect(),
            None => Vec::new(),
        }
    }

    pub(crate) fn destinations(&self) -> Vec<DestInfo> {
        let st = self.lock();
        let mut v: Vec<DestInfo> = st.dests.values().map(dest_info).collect();
        v.sort_by(|a, b| a.record.id.cmp(&b.record.id));
        v
    }

    pub(crate) fn destination(&self, sequence: &SequenceId) -> Option<DestInfo> {
        self.lock().dests.get(sequence).map(dest_info)
    }

    pub(crate) fn undelivered(
        &self,
        sequence: &SequenceId,
        after: u64,
        limit: usize,
    ) -> Vec<PendingMessage> {
        let st = self.lock();
        match st.dests.get(sequence) {
            Some(d) => d
                .pending
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(_, m)| m.clone())
                .collect(),
            None => Vec::new(),
        }
    }

    pub(crate) fn cached_reply(
        &self,
        sequence: &SequenceId,
        request_number: u64,
    ) -> Option<CachedReply> {
        self.lock()
            .dests
            .get(sequence)
            .and_then(|d| d.replies.get(&request_number).cloned())
    }

    pub(crate) fn cached_replies(
        &self,
        sequence: &SequenceId,
        after: u64,
        limit: usize,
    ) -> Vec<CachedReply> {
        let st = self.lock();
        match st.dests.get(sequence) {
            Some(d) => d
                .replies
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(_, r)| r.clone())
                .collect(),
            None => Vec::new(),
        }
    }

    pub(crate) fn cursor(&self, name: &str) -> Option<u64> {
        self.lock().cursors.get(name).copied()
    }
}

fn expiry(
    expires: Option<SystemTime>,
    inactivity: Option<std::time::Duration>,
    activity: SystemTime,
    now: SystemTime,
) -> Option<ExpiryReason> {
    if expires.is_some_and(|e| e <= now) {
        return Some(ExpiryReason::Expires);
    }
    if inactivity.is_some_and(|t| inactivity_deadline(activity, t) <= now) {
        return Some(ExpiryReason::Inactivity);
    }
    None
}

fn source_info(s: &MemSource) -> SourceInfo {
    SourceInfo {
        record: s.record.clone(),
        next_number: s.next_number,
        state: s.state,
        last_number: s.last_number,
        unacked: s.msgs.len() as u64,
        created: s.created,
        last_activity: s.activity,
    }
}

fn dest_info(d: &MemDest) -> DestInfo {
    DestInfo {
        record: d.record.clone(),
        ranges: d.ranges.ranges().to_vec(),
        state: d.state,
        last_number: d.last_number,
        pending: d.pending.len() as u64,
        next_reply_number: d.reply_next,
        delivered_through: delivered_through(d.ranges.ranges(), d.pending.keys().next().copied()),
        created: d.created,
        last_activity: d.activity,
    }
}

fn unknown(sequence: &SequenceId) -> StoreError {
    StoreError::UnknownSequence {
        sequence: sequence.clone(),
    }
}

fn run_app(app: super::AppWrite) -> Result<(), StoreError> {
    let tx = AppTx { conn: None };
    match catch_unwind(AssertUnwindSafe(|| app(&tx))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StoreError::App(e)),
        Err(_) => Err(StoreError::App("application write panicked".into())),
    }
}

impl MemState {
    fn snapshot(&self, ops: &[Op]) -> Undo {
        let mut undo = Undo {
            sources: Vec::new(),
            dests: Vec::new(),
            cursors: Vec::new(),
        };
        let src = |id: &SequenceId, undo: &mut Undo| {
            if !undo.sources.iter().any(|(k, _)| k == id) {
                undo.sources
                    .push((id.clone(), self.sources.get(id).cloned()));
            }
        };
        let dst = |id: &SequenceId, undo: &mut Undo| {
            if !undo.dests.iter().any(|(k, _)| k == id) {
                undo.dests.push((id.clone(), self.dests.get(id).cloned()));
            }
        };
        for op in ops {
            match op {
                Op::CreateSource(r) => src(&r.id, &mut undo),
                Op::RecordSent { sequence, .. }
                | Op::SourceAcked { sequence, .. }
                | Op::SourceState { sequence, .. }
                | Op::RemoveSource { sequence } => src(sequence, &mut undo),
                Op::CreateDest(r) => dst(&r.id, &mut undo),
                Op::Received { sequence, .. }
                | Op::DestState { sequence, .. }
                | Op::Deliver { sequence, .. }
                | Op::CacheReply { sequence, .. }
                | Op::RemoveDest { sequence } => dst(sequence, &mut undo),
                Op::Touch { sequence } => {
                    src(sequence, &mut undo);
                    dst(sequence, &mut undo);
                }
                Op::RepliesAcked { reply_sequence, .. } => {
                    if let Some(owners) = self.reply_owners.get(reply_sequence) {
                        for o in owners {
                            dst(o, &mut undo);
                        }
                    }
                }
                Op::SetCursor { name, .. } | Op::RemoveCursor { name } => {
                    if !undo.cursors.iter().any(|(k, _)| k == name) {
                        undo.cursors
                            .push((name.clone(), self.cursors.get(name).copied()));
                    }
                }
                Op::App(_) => {}
            }
        }
        undo
    }

    fn restore(&mut self, undo: Undo) {
        for (id, s) in undo.sources {
            match s {
                Some(s) => self.sources.insert(id, s),
                None => self.sources.remove(&id),
            };
        }
        for (id, d) in undo.dests {
            match d {
                Some(d) => self.dests.insert(id, d),
                None => self.dests.remove(&id),
            };
        }
        for (name, v) in undo.cursors {
            match v {
                Some(v) => self.cursors.insert(name, v),
                None => self.cursors.remove(&name),
            };
        }
        // `reply_owners` may keep stale entries; they are only hints (checked on use).
    }

    fn remove_dest(&mut self, id: &SequenceId) {
        if let Some(d) = self.dests.remove(id) {
            for r in d.replies.values() {
                if let Some(owners) = self.reply_owners.get_mut(&r.reply_sequence) {
                    owners.remove(id);
                    if owners.is_empty() {
                        self.reply_owners.remove(&r.reply_sequence);
                    }
                }
            }
        }
    }

    /// Applies one op; validates before mutating, so a failed op changes nothing.
    fn apply(&mut self, op: Op, at: SystemTime) -> Result<(), StoreError> {
        match op {
            Op::CreateSource(record) => {
                if self.sources.contains_key(&record.id) {
                    return Err(StoreError::SequenceExists {
                        sequence: record.id,
                    });
                }
                self.sources.insert(
                    record.id.clone(),
                    MemSource {
                        record,
                        next_number: 1,
                        state: SequenceState::Open,
                        last_number: None,
                        created: at,
                        activity: at,
                        msgs: BTreeMap::new(),
                    },
                );
            }
            Op::RecordSent {
                sequence,
                number,
                envelope,
            } => {
                check_number(number)?;
                let s = self
                    .sources
                    .get_mut(&sequence)
                    .ok_or_else(|| unknown(&sequence))?;
                if number >= s.next_number {
                    s.msgs.insert(number, envelope);
                    s.next_number = number.saturating_add(1);
                }
            }
            Op::SourceAcked { sequence, ranges } => {
                check_ranges(&ranges)?;
                let s = self
                    .sources
                    .get_mut(&sequence)
                    .ok_or_else(|| unknown(&sequence))?;
                for (lower, upper) in ranges {
                    let doomed: Vec<u64> = s.msgs.range(lower..=upper).map(|(&n, _)| n).collect();
                    for n in doomed {
                        s.msgs.remove(&n);
                    }
                }
                s.activity = at;
            }
            Op::SourceState {
                sequence,
                state,
                last_number,
            } => {
                if let Some(n) = last_number {
                    check_number(n)?;
                }
                let s = self
                    .sources
                    .get_mut(&sequence)
                    .ok_or_else(|| unknown(&sequence))?;
                s.state = state;
                if last_number.is_some() {
                    s.last_number = last_number;
                }
            }
            Op::RemoveSource { sequence } => {
                self.sources.remove(&sequence);
            }
            Op::SetCursor { name, value } => {
                self.cursors.insert(name, value);
            }
            Op::RemoveCursor { name } => {
                self.cursors.remove(&name);
            }
            Op::CreateDest(record) => {
                if self.dests.contains_key(&record.id) {
                    return Err(StoreError::SequenceExists {
                        sequence: record.id,
                    });
                }
                self.dests.insert(
                    record.id.clone(),
                    MemDest {
                        record,
                        ranges: RangeSet::new(),
                        state: SequenceState::Open,
                        last_number: None,
                        created: at,
                        activity: at,
                        pending: BTreeMap::new(),
                        replies: BTreeMap::new(),
                        reply_next: 1,
                    },
                );
            }
            Op::Received {
                sequence,
                number,
                action,
                payload,
                last,
            } => {
                check_number(number)?;
                let d = self
                    .dests
                    .get_mut(&sequence)
                    .ok_or_else(|| unknown(&sequence))?;
                super::check_receive_ahead(number, &d.ranges)?;
                d.activity = at;
                if d.ranges.insert(number) {
                    d.pending.insert(
                        number,
                        PendingMessage {
                            number,
                            action,
                            payload,
                            last,
                        },
                    );
                    if last {
                        d.last_number = Some(number);
                    }
                }
            }
            Op::DestState {
                sequence,
                state,
                last_number,
            } => {
                if let Some(n) = last_number {
                    check_number(n)?;
                }
                let d = self
                    .dests
                    .get_mut(&sequence)
                    .ok_or_else(|| unknown(&sequence))?;
                d.state = state;
                d.activity = at;
                if last_number.is_some() {
                    d.last_number = last_number;
                }
            }
            Op::Deliver {
                sequence,
                number,
                app,
            } => {
                let d = self
                    .dests
                    .get_mut(&sequence)
                    .ok_or_else(|| unknown(&sequence))?;
                if !d.pending.contains_key(&number) {
                    return Err(StoreError::NotPending { sequence, number });
                }
                if let Some(app) = app {
                    run_app(app)?;
                }
                d.pending.remove(&number);
            }
            Op::CacheReply { sequence, reply } => {
                check_number(reply.request_number)?;
                check_number(reply.reply_number)?;
                let d = self
                    .dests
                    .get_mut(&sequence)
                    .ok_or_else(|| unknown(&sequence))?;
                self.reply_owners
                    .entry(reply.reply_sequence.clone())
                    .or_default()
                    .insert(sequence);
                d.reply_next = d.reply_next.max(reply.reply_number.saturating_add(1));
                d.replies.insert(reply.request_number, reply);
            }
            Op::RepliesAcked {
                reply_sequence,
                ranges,
            } => {
                check_ranges(&ranges)?;
                let owners: Vec<SequenceId> = self
                    .reply_owners
                    .get(&reply_sequence)
                    .map(|o| o.iter().cloned().collect())
                    .unwrap_or_default();
                for owner in owners {
                    if let Some(d) = self.dests.get_mut(&owner) {
                        d.replies.retain(|_, r| {
                            r.reply_sequence != reply_sequence
                                || !ranges
                                    .iter()
                                    .any(|&(l, u)| (l..=u).contains(&r.reply_number))
                        });
                    }
                }
            }
            Op::RemoveDest { sequence } => self.remove_dest(&sequence),
            Op::Touch { sequence } => {
                if let Some(s) = self.sources.get_mut(&sequence) {
                    s.activity = at;
                }
                if let Some(d) = self.dests.get_mut(&sequence) {
                    d.activity = at;
                }
            }
            Op::App(app) => run_app(app)?,
        }
        Ok(())
    }
}
