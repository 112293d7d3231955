//! Messages/s through a client (RM Source) and an endpoint (RM Destination) in memory, duplex
//! shape, 1 KiB payloads, with 0 % and 10 % loss (both directions) in virtual time.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wsrm_proto::{
    ClientConfig, ClientSession, ClientState, Endpoint, EndpointConfig, Pattern, ServerEvent, Shape,
};

fn transfer(messages: u64, loss: f64, seed: u64) -> u64 {
    let mut now = Instant::now();
    let mut cfg = ClientConfig::new(Pattern::OneWay, Shape::Duplex);
    cfg.local_address = Arc::from("http://client.example/cb");
    cfg.settings.max_retry_count = 64;
    let mut client = ClientSession::new(now, cfg, seed).expect("config");
    let mut ecfg = EndpointConfig::default();
    ecfg.settings.max_retry_count = 64;
    let mut server = Endpoint::new(ecfg, seed + 1).expect("config");
    let mut rng = SmallRng::seed_from_u64(seed);
    let payload = Bytes::from(vec![b'x'; 1024]);
    let action: Arc<str> = Arc::from("urn:bench/op");
    for _ in 0..messages {
        client
            .send(now, action.clone(), payload.clone())
            .expect("send");
    }
    let mut delivered = 0u64;
    let mut acked = 0u64;
    let mut closing = false;
    loop {
        let mut progress = false;
        while let Some(m) = client.poll_transmit(now) {
            progress = true;
            if loss > 0.0 && rng.random_bool(loss) {
                continue;
            }
            server.handle_message(now, m, None);
        }
        while let Some(t) = server.poll_transmit(now) {
            progress = true;
            if let Some(m) = t.message {
                if loss > 0.0 && rng.random_bool(loss) {
                    continue;
                }
                client.handle_message(now, m);
            }
        }
        while let Some(e) = server.poll_event() {
            progress = true;
            match e {
                ServerEvent::SessionCreated { session, .. } => {
                    server.accept(session);
                }
                ServerEvent::Delivery {
                    session, number, ..
                } => {
                    delivered += 1;
                    server.delivered(session, number);
                }
                _ => {}
            }
        }
        while let Some(e) = client.poll_event() {
            progress = true;
            if let wsrm_proto::ClientEvent::Acknowledged { .. } = e {
                acked += 1;
            }
        }
        if acked == messages && !closing {
            closing = true;
            let _ = client.close(now);
        }
        if matches!(client.state(), ClientState::Closed | ClientState::Failed) {
            break;
        }
        if !progress {
            let next = [client.poll_timeout(), server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_millis(1));
            now = now.max(next);
            client.handle_timeout(now);
            server.handle_timeout(now);
        }
    }
    assert_eq!(delivered, messages);
    delivered
}

fn bench(c: &mut Criterion) {
    const N: u64 = 20_000;
    let mut g = c.benchmark_group("source_destination_1KiB");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.bench_function("loss_0", |b| b.iter(|| black_box(transfer(N, 0.0, 1))));
    g.bench_function("loss_10", |b| b.iter(|| black_box(transfer(N, 0.1, 1))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
