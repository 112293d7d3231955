//! Every store operation, run against both backends (memory and SQLite) with the same
//! expectations.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use wsrm::store::{
    AppError, AppTx, CachedReply, DestRecord, ExpiryReason, Op, SequenceState, Side, SourceRecord,
    SqliteOptions, Store, StoreError, StoreSpec, Txn,
};
use wsrm::RmVersion;
use wsrm_proto::msg::SequenceId;

/// A fresh store of each kind; the tempdir lives as long as the store is used.
struct Fixture {
    store: Store,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Fixture {
    Fixture {
        store: Store::memory(),
        _dir: None,
    }
}

fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Store::open_sqlite(dir.path().join("s.db"), &SqliteOptions::default()).expect("open store");
    Fixture {
        store,
        _dir: Some(dir),
    }
}

/// Generates one `#[test]` per backend for a suite function `fn(&Store)`.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn memory() {
                let f = super::memory();
                super::$name(&f.store);
            }
            #[test]
            fn sqlite() {
                let f = super::sqlite();
                super::$name(&f.store);
            }
        }
    };
}

fn sid(s: &str) -> SequenceId {
    SequenceId::from(s)
}

fn env(n: u64) -> Bytes {
    Bytes::from(format!("<s:Envelope>message {n}</s:Envelope>"))
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn numbers<T>(v: &[T], f: impl Fn(&T) -> u64) -> Vec<u64> {
    v.iter().map(f).collect()
}

fn source_lifecycle(store: &Store) {
    let s = sid("urn:uuid:source-1");
    let mut rec = SourceRecord::new(s.clone(), RmVersion::Wsrm11, "http://127.0.0.1:9/svc");
    rec.offered = Some(sid("urn:uuid:offer-1"));
    rec.label = Some("run-a".into());
    rec.extra = Bytes::from_static(b"settings");
    rec.inactivity_timeout = Some(Duration::from_secs(30));
    store
        .commit(Txn::single(Op::CreateSource(rec.clone())).at(t0()))
        .wait()
        .expect("create");
    for n in 1..=5 {
        store.record_sent(&s, n, env(n)).wait().expect("record");
    }
    let info = store.source(&s).wait().expect("read").expect("stored");
    assert_eq!(info.record, rec);
    assert_eq!(info.next_number, 6);
    assert_eq!(info.unacked, 5);
    assert_eq!(info.state, SequenceState::Open);
    assert_eq!(info.last_number, None);
    assert_eq!(info.created, t0());
    assert_eq!(info.last_activity, t0());

    // Paging: bounded pages, ascending, resuming after the last number.
    let p1 = store.unacked(&s, 0, 2).wait().expect("page");
    assert_eq!(numbers(&p1, |m| m.number), vec![1, 2]);
    assert_eq!(p1[0].envelope, env(1));
    let p2 = store.unacked(&s, 2, 2).wait().expect("page");
    assert_eq!(numbers(&p2, |m| m.number), vec![3, 4]);
    let p3 = store.unacked(&s, 4, 2).wait().expect("page");
    assert_eq!(numbers(&p3, |m| m.number), vec![5]);
    assert!(store.unacked(&s, 5, 2).wait().expect("page").is_empty());

    // Acknowledgement ranges delete exactly their messages.
    store
        .commit(
            Txn::single(Op::SourceAcked {
                sequence: s.clone(),
                ranges: vec![(1, 2), (4, 4)],
            })
            .at(t0() + Duration::from_secs(3)),
        )
        .wait()
        .expect("ack");
    let left = store.unacked(&s, 0, 100).wait().expect("page");
    assert_eq!(numbers(&left, |m| m.number), vec![3, 5]);
    assert_eq!(left[0].envelope, env(3));
    let info = store.source(&s).wait().expect("read").expect("stored");
    assert_eq!(info.unacked, 2);
    assert_eq!(info.last_activity, t0() + Duration::from_secs(3));

    // The stored envelope is the first one; acknowledged numbers are not resurrected.
    store
        .record_sent(&s, 3, Bytes::from_static(b"other"))
        .wait()
        .expect("re-record");
    store
        .record_sent(&s, 2, Bytes::from_static(b"other"))
        .wait()
        .expect("re-record acked");
    let left = store.unacked(&s, 0, 100).wait().expect("page");
    assert_eq!(numbers(&left, |m| m.number), vec![3, 5]);
    assert_eq!(left[0].envelope, env(3));

    store
        .set_source_state(&s, SequenceState::Closing, Some(5))
        .wait()
        .expect("state");
    let info = store.source(&s).wait().expect("read").expect("stored");
    assert_eq!(info.state, SequenceState::Closing);
    assert_eq!(info.last_number, Some(5));
    // `None` keeps the last number.
    store
        .set_source_state(&s, SequenceState::Terminated, None)
        .wait()
        .expect("state");
    let info = store.source(&s).wait().expect("read").expect("stored");
    assert_eq!(info.state, SequenceState::Terminated);
    assert_eq!(info.last_number, Some(5));

    let all = store.sources().wait().expect("list");
    assert_eq!(all.len(), 1);
    store.remove_source(&s).wait().expect("remove");
    assert!(store.sources().wait().expect("list").is_empty());
    assert!(store.unacked(&s, 0, 100).wait().expect("page").is_empty());
    // Removing again is not an error.
    store.remove_source(&s).wait().expect("remove again");
}
both!(source_lifecycle);

fn errors_are_typed(store: &Store) {
    let s = sid("s");
    let d = sid("d");
    let rec = SourceRecord::new(s.clone(), RmVersion::Wsrm10, "http://127.0.0.1:9/");
    store.create_source(rec.clone()).wait().expect("create");
    assert!(matches!(
        store.create_source(rec).wait(),
        Err(StoreError::SequenceExists { sequence }) if sequence == s
    ));
    let drec = DestRecord::new(d.clone(), RmVersion::Wsrm10, "http://127.0.0.1:9/acks");
    store.create_dest(drec.clone()).wait().expect("create dest");
    assert!(matches!(
        store.create_dest(drec).wait(),
        Err(StoreError::SequenceExists { .. })
    ));
    let nope = sid("nope");
    assert!(matches!(
        store.record_sent(&nope, 1, env(1)).wait(),
        Err(StoreError::UnknownSequence { sequence }) if sequence == nope
    ));
    assert!(matches!(
        store.source_acked(&nope, &[(1, 1)]).wait(),
        Err(StoreError::UnknownSequence { .. })
    ));
    assert!(matches!(
        store
            .set_source_state(&nope, SequenceState::Closed, None)
            .wait(),
        Err(StoreError::UnknownSequence { .. })
    ));
    assert!(matches!(
        store.received(&nope, 1, "a", env(1), false).wait(),
        Err(StoreError::UnknownSequence { .. })
    ));
    assert!(matches!(
        store
            .set_dest_state(&nope, SequenceState::Closed, None)
            .wait(),
        Err(StoreError::UnknownSequence { .. })
    ));
    assert!(matches!(
        store.mark_delivered(&nope, 1).wait(),
        Err(StoreError::UnknownSequence { .. })
    ));
    // Out-of-range numbers and inverted ranges.
    assert!(matches!(
        store.record_sent(&s, 0, env(0)).wait(),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.record_sent(&s, u64::MAX, env(0)).wait(),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.source_acked(&s, &[(3, 2)]).wait(),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.received(&d, 0, "a", env(0), false).wait(),
        Err(StoreError::Invalid { .. })
    ));
    // A hostile number far past the first gap is not stored (bounded store per sequence);
    // the edge of the bound is.
    let ahead = wsrm::store::MAX_RECEIVE_AHEAD;
    assert!(matches!(
        store.received(&d, ahead + 1, "a", env(1), false).wait(),
        Err(StoreError::Invalid { .. })
    ));
    assert!(matches!(
        store.received(&d, u64::MAX >> 1, "a", env(1), false).wait(),
        Err(StoreError::Invalid { .. })
    ));
    store
        .received(&d, ahead, "a", env(ahead), false)
        .wait()
        .expect("within the bound");
    // The largest legal number works.
    let max = wsrm_proto::msg::MAX_MESSAGE_NUMBER;
    store.record_sent(&s, max, env(max)).wait().expect("max");
    let info = store.source(&s).wait().expect("read").expect("stored");
    assert_eq!(info.unacked, 1);
    // A failed op leaves the store usable.
    store
        .record_sent(&s, 1, env(1))
        .wait()
        .expect("below next: ignored");
    assert_eq!(
        numbers(&store.unacked(&s, 0, 10).wait().expect("page"), |m| m
            .number),
        vec![max]
    );
}
both!(errors_are_typed);

fn txn_is_all_or_nothing(store: &Store) {
    let s = sid("s");
    store
        .create_source(SourceRecord::new(s.clone(), RmVersion::Wsrm10, "x"))
        .wait()
        .expect("create");
    store
        .record_sent_with_cursor(&s, 1, env(1), "input", 1)
        .wait()
        .expect("record with cursor");
    assert_eq!(store.cursor("input").wait().expect("cursor"), Some(1));

    // The last op fails: the message, the cursor, and the new sequence all roll back.
    let r = store
        .commit(
            Txn::new()
                .with(Op::RecordSent {
                    sequence: s.clone(),
                    number: 2,
                    envelope: env(2),
                })
                .with(Op::SetCursor {
                    name: "input".into(),
                    value: 2,
                })
                .with(Op::CreateDest(DestRecord::new(
                    sid("d"),
                    RmVersion::Wsrm10,
                    "a",
                )))
                .with(Op::RecordSent {
                    sequence: sid("missing"),
                    number: 1,
                    envelope: env(1),
                }),
        )
        .wait();
    assert!(matches!(r, Err(StoreError::UnknownSequence { .. })));
    assert_eq!(store.cursor("input").wait().expect("cursor"), Some(1));
    let info = store.source(&s).wait().expect("read").expect("stored");
    assert_eq!(info.next_number, 2);
    assert_eq!(info.unacked, 1);
    assert!(store.destinations().wait().expect("list").is_empty());

    // Cursors: set, overwrite, remove.
    store.set_cursor("other", 7).wait().expect("set");
    store.set_cursor("other", 9).wait().expect("set");
    assert_eq!(store.cursor("other").wait().expect("cursor"), Some(9));
    store
        .commit(Txn::single(Op::RemoveCursor {
            name: "other".into(),
        }))
        .wait()
        .expect("remove");
    assert_eq!(store.cursor("other").wait().expect("cursor"), None);
    // An empty transaction is fine.
    store.commit(Txn::new()).wait().expect("empty");
}
both!(txn_is_all_or_nothing);

fn destination_lifecycle(store: &Store) {
    let d = sid("urn:uuid:dest-1");
    let mut rec = DestRecord::new(d.clone(), RmVersion::Wsrm10, "http://127.0.0.1:9/acks");
    rec.reply_sequence = Some(sid("urn:uuid:offer"));
    rec.label = Some("svc".into());
    rec.expires = Some(t0() + Duration::from_secs(3600));
    rec.inactivity_timeout = None;
    store
        .commit(Txn::single(Op::CreateDest(rec.clone())).at(t0()))
        .wait()
        .expect("create");
    for n in [1u64, 3, 2, 6] {
        store
            .received(&d, n, "urn:act", env(n), false)
            .wait()
            .expect("received");
    }
    // A duplicate with other content changes nothing.
    store
        .received(&d, 2, "urn:other", Bytes::from_static(b"dup"), false)
        .wait()
        .expect("dup");
    let info = store.destination(&d).wait().expect("read").expect("stored");
    assert_eq!(info.record, rec);
    assert_eq!(info.ranges, vec![(1, 3), (6, 6)]);
    assert_eq!(info.pending, 4);
    assert_eq!(info.delivered_through, 0);
    assert_eq!(info.state, SequenceState::Open);
    assert_eq!(info.next_reply_number, 1);
    let pend = store.undelivered(&d, 0, 10).wait().expect("page");
    assert_eq!(numbers(&pend, |m| m.number), vec![1, 2, 3, 6]);
    assert_eq!(pend[1].payload, env(2));
    assert_eq!(pend[1].action, "urn:act");
    assert!(!pend[1].last);

    store.mark_delivered(&d, 1).wait().expect("deliver 1");
    assert!(matches!(
        store.mark_delivered(&d, 1).wait(),
        Err(StoreError::NotPending { number: 1, .. })
    ));
    assert!(matches!(
        store.mark_delivered(&d, 4).wait(),
        Err(StoreError::NotPending { number: 4, .. })
    ));
    // Out of order (unordered delivery): the watermark stays below the gap.
    store.mark_delivered(&d, 3).wait().expect("deliver 3");
    let info = store.destination(&d).wait().expect("read").expect("stored");
    assert_eq!(info.delivered_through, 1);
    assert_eq!(info.pending, 2);
    store.mark_delivered(&d, 2).wait().expect("deliver 2");
    let info = store.destination(&d).wait().expect("read").expect("stored");
    assert_eq!(info.delivered_through, 3);
    // A delivered number received again stays delivered.
    store
        .received(&d, 2, "urn:act", env(2), false)
        .wait()
        .expect("dup of delivered");
    let pend = store.undelivered(&d, 0, 10).wait().expect("page");
    assert_eq!(numbers(&pend, |m| m.number), vec![6]);

    // 1.0 LastMessage records the last number.
    store
        .received(&d, 7, "urn:last", Bytes::new(), true)
        .wait()
        .expect("last");
    let info = store.destination(&d).wait().expect("read").expect("stored");
    assert_eq!(info.last_number, Some(7));
    assert_eq!(info.ranges, vec![(1, 3), (6, 7)]);
    let pend = store.undelivered(&d, 6, 10).wait().expect("page");
    assert_eq!(numbers(&pend, |m| m.number), vec![7]);
    assert!(pend[0].last);

    store
        .set_dest_state(&d, SequenceState::Closed, Some(7))
        .wait()
        .expect("close");
    let info = store.destination(&d).wait().expect("read").expect("stored");
    assert_eq!(info.state, SequenceState::Closed);
    assert_eq!(store.destinations().wait().expect("list").len(), 1);

    store.remove_dest(&d).wait().expect("remove");
    assert!(store.destinations().wait().expect("list").is_empty());
    assert!(store
        .undelivered(&d, 0, 10)
        .wait()
        .expect("page")
        .is_empty());
}
both!(destination_lifecycle);

/// Records what the application wrote: in SQLite, a table in the same transaction; in memory,
/// a vector.
fn app_write(
    log: Arc<Mutex<Vec<u64>>>,
    n: u64,
    fail: bool,
) -> impl FnOnce(&AppTx<'_>) -> Result<(), AppError> + Send + 'static {
    move |tx: &AppTx<'_>| {
        if let Some(c) = tx.sqlite() {
            c.execute(
                "CREATE TABLE IF NOT EXISTS app_log (number INTEGER PRIMARY KEY)",
                [],
            )?;
            c.execute("INSERT INTO app_log (number) VALUES (?1)", [n as i64])?;
        } else {
            assert!(!tx.is_durable());
            if !fail {
                log.lock().expect("log").push(n);
            }
        }
        if fail {
            return Err("application refused".into());
        }
        Ok(())
    }
}

fn app_rows(store: &Store, log: &Arc<Mutex<Vec<u64>>>) -> Vec<u64> {
    match store.as_sqlite() {
        Some(s) => s
            .query(|c| {
                let exists: bool = c.query_row(
                    "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'app_log'",
                    [],
                    |r| r.get(0),
                )?;
                if !exists {
                    return Ok(Vec::new());
                }
                let mut st = c.prepare("SELECT number FROM app_log ORDER BY number")?;
                let v = st
                    .query_map([], |r| r.get::<_, i64>(0))?
                    .map(|r| r.map(|n| n as u64))
                    .collect::<Result<Vec<u64>, _>>()?;
                Ok(v)
            })
            .wait()
            .expect("app rows"),
        None => log.lock().expect("log").clone(),
    }
}

fn inbox_exactly_once(store: &Store) {
    let d = sid("d");
    let log = Arc::new(Mutex::new(Vec::new()));
    store
        .create_dest(DestRecord::new(d.clone(), RmVersion::Wsrm11, "a"))
        .wait()
        .expect("create");
    for n in 1..=4 {
        store
            .received(&d, n, "act", env(n), false)
            .wait()
            .expect("recv");
    }
    store
        .deliver(&d, 1, app_write(log.clone(), 1, false))
        .wait()
        .expect("deliver 1");
    // Second delivery of the same message: refused, its application write rolled back.
    assert!(matches!(
        store
            .deliver(&d, 1, app_write(log.clone(), 1, false))
            .wait(),
        Err(StoreError::NotPending { number: 1, .. })
    ));
    // The application fails: the message stays pending and nothing of its write remains.
    assert!(matches!(
        store.deliver(&d, 2, app_write(log.clone(), 2, true)).wait(),
        Err(StoreError::App(e)) if e.to_string() == "application refused"
    ));
    // The application panics: same.
    assert!(matches!(
        store
            .deliver(&d, 2, |_: &AppTx<'_>| -> Result<(), AppError> {
                panic!("boom")
            })
            .wait(),
        Err(StoreError::App(_))
    ));
    assert_eq!(app_rows(store, &log), vec![1]);
    let pend = store.undelivered(&d, 0, 10).wait().expect("page");
    assert_eq!(numbers(&pend, |m| m.number), vec![2, 3, 4]);
    // Delivery then works, and every message is delivered exactly once.
    for n in 2..=4 {
        store
            .deliver(&d, n, app_write(log.clone(), n, false))
            .wait()
            .expect("deliver");
    }
    assert_eq!(app_rows(store, &log), vec![1, 2, 3, 4]);
    assert!(store
        .undelivered(&d, 0, 10)
        .wait()
        .expect("page")
        .is_empty());
    let info = store.destination(&d).wait().expect("read").expect("stored");
    assert_eq!(info.delivered_through, 4);

    // Op::App alone, atomically with a delivery in one transaction.
    store
        .received(&d, 5, "act", env(5), false)
        .wait()
        .expect("recv");
    store
        .commit(
            Txn::new()
                .with(Op::Deliver {
                    sequence: d.clone(),
                    number: 5,
                    app: None,
                })
                .with(Op::App(Box::new(app_write(log.clone(), 5, false)))),
        )
        .wait()
        .expect("deliver + app");
    assert_eq!(app_rows(store, &log), vec![1, 2, 3, 4, 5]);
}
both!(inbox_exactly_once);

fn cached_replies(store: &Store) {
    let d = sid("requests");
    let r = sid("replies");
    let mut rec = DestRecord::new(d.clone(), RmVersion::Wsrm11, "a");
    rec.reply_sequence = Some(r.clone());
    store.create_dest(rec).wait().expect("create");
    for req in 1..=3u64 {
        store
            .received(&d, req, "req", env(req), false)
            .wait()
            .expect("recv");
        // Delivery and its reply in one transaction: a retransmitted request after a crash
        // finds the reply instead of being executed again.
        store
            .commit(
                Txn::new()
                    .with(Op::Deliver {
                        sequence: d.clone(),
                        number: req,
                        app: None,
                    })
                    .with(Op::CacheReply {
                        sequence: d.clone(),
                        reply: CachedReply {
                            request_number: req,
                            reply_sequence: r.clone(),
                            reply_number: req + 10,
                            envelope: env(100 + req),
                        },
                    }),
            )
            .wait()
            .expect("deliver + reply");
    }
    let got = store
        .cached_reply(&d, 2)
        .wait()
        .expect("read")
        .expect("cached");
    assert_eq!(
        got,
        CachedReply {
            request_number: 2,
            reply_sequence: r.clone(),
            reply_number: 12,
            envelope: env(102)
        }
    );
    assert_eq!(store.cached_reply(&d, 9).wait().expect("read"), None);
    let page = store.cached_replies(&d, 1, 1).wait().expect("page");
    assert_eq!(numbers(&page, |c| c.request_number), vec![2]);

    // A failing delivery does not cache its reply.
    assert!(store
        .commit(
            Txn::new()
                .with(Op::CacheReply {
                    sequence: d.clone(),
                    reply: CachedReply {
                        request_number: 9,
                        reply_sequence: r.clone(),
                        reply_number: 19,
                        envelope: env(109),
                    },
                })
                .with(Op::Deliver {
                    sequence: d.clone(),
                    number: 9,
                    app: None,
                }),
        )
        .wait()
        .is_err());
    assert_eq!(store.cached_reply(&d, 9).wait().expect("read"), None);

    // The client acknowledges replies 11 and 13 (on the reply sequence).
    store
        .replies_acked(&r, &[(11, 11), (13, 13)])
        .wait()
        .expect("acked");
    // The reply numbering survives the acknowledgement of cached replies.
    let info = store.destination(&d).wait().expect("read").expect("stored");
    assert_eq!(info.next_reply_number, 14);
    let page = store.cached_replies(&d, 0, 10).wait().expect("page");
    assert_eq!(numbers(&page, |c| c.request_number), vec![2]);
    // Acks for another reply sequence touch nothing.
    store
        .replies_acked(&sid("other"), &[(1, 100)])
        .wait()
        .expect("acked");
    assert_eq!(
        store.cached_replies(&d, 0, 10).wait().expect("page").len(),
        1
    );
    assert!(matches!(
        store
            .cache_reply(
                &sid("nope"),
                CachedReply {
                    request_number: 1,
                    reply_sequence: r.clone(),
                    reply_number: 1,
                    envelope: Bytes::new()
                }
            )
            .wait(),
        Err(StoreError::UnknownSequence { .. })
    ));
    // Removing the sequence drops its cached replies.
    store.remove_dest(&d).wait().expect("remove");
    assert_eq!(store.cached_reply(&d, 2).wait().expect("read"), None);
}
both!(cached_replies);

fn expiry(store: &Store) {
    let mut a = SourceRecord::new(sid("src-idle"), RmVersion::Wsrm10, "x");
    a.inactivity_timeout = Some(Duration::from_secs(10));
    a.label = Some("idle".into());
    let mut b = DestRecord::new(sid("dst-expires"), RmVersion::Wsrm10, "x");
    b.expires = Some(t0() + Duration::from_secs(5));
    b.inactivity_timeout = None;
    let mut c = DestRecord::new(sid("dst-forever"), RmVersion::Wsrm10, "x");
    c.inactivity_timeout = None;
    let mut e = DestRecord::new(sid("dst-touched"), RmVersion::Wsrm10, "x");
    e.inactivity_timeout = Some(Duration::from_secs(10));
    store
        .commit(
            Txn::new()
                .with(Op::CreateSource(a))
                .with(Op::CreateDest(b))
                .with(Op::CreateDest(c))
                .with(Op::CreateDest(e))
                .at(t0()),
        )
        .wait()
        .expect("create");
    store
        .record_sent(&sid("src-idle"), 1, env(1))
        .wait()
        .expect("record");
    store
        .received(&sid("dst-expires"), 1, "a", env(1), false)
        .wait()
        .expect("recv");
    // Peer activity at t0+8 keeps dst-touched alive until t0+18.
    store
        .commit(
            Txn::single(Op::Touch {
                sequence: sid("dst-touched"),
            })
            .at(t0() + Duration::from_secs(8)),
        )
        .wait()
        .expect("touch");

    let none = store
        .remove_expired(t0() + Duration::from_secs(4))
        .wait()
        .expect("expire");
    assert!(none.is_empty());
    let first = store
        .remove_expired(t0() + Duration::from_secs(6))
        .wait()
        .expect("expire");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, sid("dst-expires"));
    assert_eq!(first[0].side, Side::Destination);
    assert_eq!(first[0].reason, ExpiryReason::Expires);
    assert!(store
        .undelivered(&sid("dst-expires"), 0, 10)
        .wait()
        .expect("page")
        .is_empty());
    let second = store
        .remove_expired(t0() + Duration::from_secs(11))
        .wait()
        .expect("expire");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, sid("src-idle"));
    assert_eq!(second[0].side, Side::Source);
    assert_eq!(second[0].label.as_deref(), Some("idle"));
    assert_eq!(second[0].reason, ExpiryReason::Inactivity);
    assert!(store
        .unacked(&sid("src-idle"), 0, 10)
        .wait()
        .expect("page")
        .is_empty());
    let third = store
        .remove_expired(t0() + Duration::from_secs(18))
        .wait()
        .expect("expire");
    assert_eq!(numbers(&third, |_| 1).len(), 1);
    assert_eq!(third[0].id, sid("dst-touched"));
    // No timeout and no Expires: kept forever.
    let left = store.destinations().wait().expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].record.id, sid("dst-forever"));
    assert!(store
        .remove_expired(t0() + Duration::from_secs(1_000_000))
        .wait()
        .expect("expire")
        .is_empty());
}
both!(expiry);

fn async_callers(store: &Store) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let store = store.clone();
    rt.block_on(async move {
        let s = sid("async");
        store
            .create_source(SourceRecord::new(s.clone(), RmVersion::Wsrm10, "x"))
            .await
            .expect("create");
        // Many writes in flight at once, awaited together.
        let pending: Vec<_> = (1..=50).map(|n| store.record_sent(&s, n, env(n))).collect();
        for p in pending {
            p.await.expect("durable");
        }
        let info = store.source(&s).await.expect("read").expect("stored");
        assert_eq!(info.unacked, 50);
        let handle = {
            let store = store.clone();
            let s = s.clone();
            tokio::spawn(async move { store.source_acked(&s, &[(1, 50)]).await })
        };
        handle.await.expect("join").expect("acked");
        assert_eq!(store.flush().await.ok(), Some(()));
        assert!(store.unacked(&s, 0, 100).await.expect("page").is_empty());
    });
}
both!(async_callers);

#[test]
fn store_spec_parses() {
    assert_eq!("memory".parse::<StoreSpec>(), Ok(StoreSpec::Memory));
    assert_eq!(
        "sqlite:/var/lib/wsrm/s.db".parse::<StoreSpec>(),
        Ok(StoreSpec::Sqlite("/var/lib/wsrm/s.db".into()))
    );
    assert!("sqlite:".parse::<StoreSpec>().is_err());
    assert!("postgres:x".parse::<StoreSpec>().is_err());
    assert_eq!(
        StoreSpec::Sqlite("a/b.db".into()).to_string(),
        "sqlite:a/b.db"
    );
    assert_eq!(StoreSpec::Memory.to_string(), "memory");
    let mem = Store::open(&StoreSpec::Memory).expect("memory");
    assert!(!mem.is_durable());
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = StoreSpec::Sqlite(dir.path().join("x.db"));
    let s = Store::open(&spec).expect("sqlite");
    assert!(s.is_durable());
    assert!(s.as_sqlite().is_some());
    assert!(mem.as_memory().is_some());
}
