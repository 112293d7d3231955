//! Durable append throughput of the message stores: 1 KiB envelopes recorded as sent
//! (`Store::record_sent`), each counted when its completion says it is durable.
//!
//! * `memory`: the volatile store.
//! * `sqlite_group_commit/inflight=N`: the SQLite store (`synchronous=FULL`, WAL) with N writes
//!   in flight at once (a sender window, or N sessions), so the writer thread commits many in
//!   one transaction and one fsync.
//! * `sqlite_normal_group_commit/inflight=64`: the same with `synchronous=NORMAL`.
//! * `sqlite_txn_per_message`: one write in flight: one transaction and one fsync per message.
//!
//! Run: `cargo bench -p wsrm --bench store`. The store lives in the system temporary directory.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsrm::store::{SourceRecord, SqliteOptions, Store, Synchronous};
use wsrm::RmVersion;
use wsrm_proto::msg::SequenceId;

const MESSAGES: u64 = 2_000;

fn envelope(n: u64) -> Bytes {
    let mut v = format!("<s:Envelope><n>{n}</n>").into_bytes();
    v.resize(1024, b'x');
    Bytes::from(v)
}

struct Target {
    store: Store,
    seq: SequenceId,
    next: u64,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    fn new(store: Store, dir: Option<tempfile::TempDir>) -> Self {
        let seq = SequenceId::from("urn:uuid:bench");
        store
            .create_source(SourceRecord::new(
                seq.clone(),
                RmVersion::Wsrm11,
                "http://127.0.0.1:1/",
            ))
            .wait()
            .expect("create");
        Target {
            store,
            seq,
            next: 1,
            _dir: dir,
        }
    }

    fn sqlite(sync: Synchronous) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_sqlite(
            dir.path().join("bench.db"),
            &SqliteOptions::default().synchronous(sync),
        )
        .expect("open");
        Target::new(store, Some(dir))
    }

    /// Appends `count` messages with at most `inflight` writes outstanding; returns the time
    /// until the last one is durable. Then acknowledges them (untimed) so the store stays small.
    fn append(&mut self, count: u64, inflight: usize) -> Duration {
        let bodies: Vec<Bytes> = (0..count).map(|i| envelope(self.next + i)).collect();
        let start = Instant::now();
        let mut window = VecDeque::with_capacity(inflight);
        for body in bodies {
            if window.len() >= inflight {
                if let Some(c) = window.pop_front() {
                    let c: wsrm::store::Durable = c;
                    c.wait().expect("durable");
                }
            }
            window.push_back(self.store.record_sent(&self.seq, self.next, body));
            self.next += 1;
        }
        for c in window {
            c.wait().expect("durable");
        }
        let elapsed = start.elapsed();
        self.store
            .source_acked(&self.seq, &[(1, self.next - 1)])
            .wait()
            .expect("ack");
        elapsed
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_append_1KiB");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(MESSAGES));

    let mut mem = Target::new(Store::memory(), None);
    g.bench_function("memory", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| mem.append(MESSAGES, 64)).sum())
    });

    for inflight in [8usize, 64, 512] {
        let mut t = Target::sqlite(Synchronous::Full);
        g.bench_with_input(
            BenchmarkId::new("sqlite_group_commit", format!("inflight={inflight}")),
            &inflight,
            |b, &inflight| {
                b.iter_custom(|iters| (0..iters).map(|_| t.append(MESSAGES, inflight)).sum())
            },
        );
    }

    let mut t = Target::sqlite(Synchronous::Normal);
    g.bench_function(
        BenchmarkId::new("sqlite_normal_group_commit", "inflight=64"),
        |b| b.iter_custom(|iters| (0..iters).map(|_| t.append(MESSAGES, 64)).sum()),
    );

    // One write at a time: a transaction and an fsync per message. Fewer messages per sample.
    g.throughput(Throughput::Elements(200));
    let mut t = Target::sqlite(Synchronous::Full);
    g.bench_function("sqlite_txn_per_message", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| t.append(200, 1)).sum())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
