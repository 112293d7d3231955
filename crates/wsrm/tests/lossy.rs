//! The matrix through the fault-injecting proxy: one-way and request-reply × WS-RM 1.0 and 1.1
//! × SOAP 1.1 and 1.2, 20 % request loss, 5 % response loss, 10 % duplication, 10 %
//! reordering. Every message must arrive exactly once and in order. All eight cases run
//! concurrently (they mostly wait on retransmission timers).
//!
//! Messages per case: `WSRM_LOSSY_MESSAGES` (default 2,000, the size). With the
//! recovery changes of docs/engine.md (deviations 7–9: overtaking messages admitted, a failed
//! exchange resent at once, a full buffer polled after 2·RTT) the eight cases of 2,000 messages
//! took 298 s in a debug build on a loaded 2-core machine (load average ≈ 6); before them,
//! 100 messages per case took minutes. With deviation 10 (ordered request-reply requests
//! admitted ahead of a gap and answered on their own exchange) the request-reply cases went
//! from ≈ 2,800 to ≈ 600–650 retransmissions per 2,000 requests and the whole test from 341 s
//! to 58 s. Set it lower for a quick local run.

mod common;

use common::*;
use futures_util::StreamExt;
use wsrm::{Binding, Client, ClientOptions, Proxy, ProxyConfig, RmVersion, SoapVersion};

fn messages() -> usize {
    std::env::var("WSRM_LOSSY_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

async fn case(rm: RmVersion, soap: SoapVersion, request_reply: bool, seed: u64) -> String {
    let n = messages();
    let name = format!(
        "rm {rm} soap {} {}",
        soap.as_str(),
        if request_reply {
            "request-reply"
        } else {
            "one-way"
        }
    );
    let binding = Binding::custom()
        .rm_version(rm)
        .soap(soap)
        .max_transfer_window_size(64)
        // What is tested is exactly-once, in-order delivery, not the retry budget (the engine's
        // own tests cover MaxRetryCount). With 20 % request and 5 % response loss an attempt
        // fails about 24 % of the time, nine failures in a row happen to about 2.6e-6 of the
        // messages, and a run has 16,000: WCF's default of 8 would fail a session in a few per
        // cent of runs (seen in CI, before deviation 10 of docs/engine.md, when requests behind
        // a lost one were dropped and burned attempts too).
        .max_retry_count(20)
        // WCF's 400 ms RTO floor and window reset on every timeout make 20 % loss slow (a few
        // messages per second): queued calls may wait minutes, which is not what is tested.
        .send_timeout(std::time::Duration::from_secs(1800));
    let log = Log::default();
    let svc = recording_echo_service(&binding, &log).await;
    let mut pc = ProxyConfig::from_url(&svc.url("")).unwrap();
    pc.drop_requests = 0.2;
    pc.drop_responses = 0.05;
    pc.duplicate = 0.1;
    pc.reorder = 0.1;
    pc.seed = seed;
    let proxy = Proxy::spawn("127.0.0.1:0".parse().unwrap(), pc)
        .await
        .unwrap();
    let opts = ClientOptions {
        request_reply,
        ..ClientOptions::default()
    };
    // Opening may take a few 10 s CreateSequence retries when the proxy drops them.
    let client = Client::open(&proxy.url("/svc"), &binding, opts)
        .await
        .unwrap();
    let c = &client;
    let results: Vec<(usize, String)> = futures_util::stream::iter(1..=n)
        .map(|i| async move {
            if request_reply {
                let r = c
                    .request(ECHO, payload(i))
                    .await
                    .unwrap_or_else(|e| panic!("{i}: {e}"));
                (i, String::from_utf8_lossy(&r.body).to_string())
            } else {
                let n = c
                    .send(ONEWAY, payload(i))
                    .await
                    .unwrap_or_else(|e| panic!("{i}: {e}"));
                (i, n.to_string())
            }
        })
        .buffered(64)
        .collect()
        .await;
    for (i, r) in &results {
        if request_reply {
            assert_eq!(
                *r,
                format!("<echo xmlns=\"urn:wsrm:test\">{}</echo>", payload(*i)),
                "{name}"
            );
        } else {
            assert_eq!(*r, i.to_string(), "{name}");
        }
    }
    let stats = client
        .close()
        .await
        .unwrap_or_else(|e| panic!("{name}: close: {e}"));
    let got = settled(&log, n).await;
    assert_eq!(got.len(), n, "{name}: exactly once");
    for (k, s) in got.iter().enumerate() {
        assert_eq!(s.body, payload(k + 1), "{name}: in order");
        assert_eq!(s.number, k as u64 + 1, "{name}");
    }
    let ps = proxy.stats();
    assert!(
        ps.dropped_requests > 0 && ps.duplicated > 0 && ps.reordered > 0,
        "{name}: {ps}"
    );
    assert!(stats.retransmitted > 0, "{name}");
    format!("{name}: {ps}; client {stats:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_matrix_exactly_once_in_order() {
    init_tracing();
    let mut set = tokio::task::JoinSet::new();
    let mut seed = 100;
    for rm in [RmVersion::Wsrm10, RmVersion::Wsrm11] {
        for soap in [SoapVersion::Soap11, SoapVersion::Soap12] {
            for rr in [false, true] {
                seed += 1;
                set.spawn(case(rm, soap, rr, seed));
            }
        }
    }
    while let Some(r) = set.join_next().await {
        let line = r.unwrap();
        eprintln!("{line}");
    }
}
