//! The fault-injecting intermediary over real sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use wsrm::{DropMode, Proxy, ProxyConfig};

mod common;

type Seen = Arc<Mutex<Vec<String>>>;

/// An upstream that records each request body and answers `ok:<body>`.
async fn upstream() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let addr = common::serve_fn(move |req: Request<hyper::body::Incoming>| {
        let s = s.clone();
        async move {
            let b = req.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&b).to_string();
            s.lock().unwrap().push(text.clone());
            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(format!(
                "ok:{text}"
            )))))
        }
    })
    .await;
    (addr, seen)
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

async fn post(c: &Client, url: &str, body: &str) -> Result<(StatusCode, String), String> {
    let req = Request::post(url)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = c.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let b = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&b).to_string()))
}

fn cfg(up: SocketAddr) -> ProxyConfig {
    ProxyConfig::new(format!("http://{up}").parse::<Uri>().unwrap())
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}

#[tokio::test]
async fn transparent_forwarding_keeps_path_body_and_order() {
    let (up, seen) = upstream().await;
    let proxy = Proxy::spawn("127.0.0.1:0".parse().unwrap(), cfg(up))
        .await
        .unwrap();
    let c = client();
    for i in 0..10 {
        let r = post(&c, &proxy.url("/svc"), &format!("m{i}"))
            .await
            .unwrap();
        assert_eq!(r, (StatusCode::OK, format!("ok:m{i}")));
    }
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    assert_eq!(*seen.lock().unwrap(), expected);
    let st = proxy.shutdown().await;
    assert_eq!(st.exchanges, 10);
    assert_eq!(st.forwarded, 10);
    assert_eq!(
        st.dropped_requests + st.dropped_responses + st.duplicated,
        0
    );
}

#[tokio::test]
async fn dropped_requests_never_reach_the_service_and_answer_502() {
    let (up, seen) = upstream().await;
    let mut c0 = cfg(up);
    c0.drop_requests = 1.0;
    let proxy = Proxy::spawn("127.0.0.1:0".parse().unwrap(), c0)
        .await
        .unwrap();
    let c = client();
    for i in 0..5 {
        let r = post(&c, &proxy.url("/"), &format!("m{i}")).await.unwrap();
        assert_eq!(r, (StatusCode::BAD_GATEWAY, String::new()));
    }
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(proxy.stats().dropped_requests, 5);
}

#[tokio::test]
async fn dropped_responses_reach_the_service_but_not_the_client() {
    let (up, seen) = upstream().await;
    let mut c0 = cfg(up);
    c0.drop_responses = 1.0;
    c0.drop_mode = DropMode::Close;
    let proxy = Proxy::spawn("127.0.0.1:0".parse().unwrap(), c0)
        .await
        .unwrap();
    let c = client();
    for i in 0..3 {
        let r = post(&c, &proxy.url("/"), &format!("m{i}")).await;
        assert!(r.is_err(), "expected a closed connection, got {r:?}");
    }
    assert_eq!(*seen.lock().unwrap(), vec!["m0", "m1", "m2"]);
    assert_eq!(proxy.stats().dropped_responses, 3);
}

#[tokio::test]
async fn duplicates_are_forwarded_twice() {
    let (up, seen) = upstream().await;
    let mut c0 = cfg(up);
    c0.duplicate = 1.0;
    let proxy = Proxy::spawn("127.0.0.1:0".parse().unwrap(), c0)
        .await
        .unwrap();
    let c = client();
    for i in 0..4 {
        let r = post(&c, &proxy.url("/"), &format!("m{i}")).await.unwrap();
        assert_eq!(r.0, StatusCode::OK);
    }
    wait_for(|| seen.lock().unwrap().len() == 8).await;
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, vec!["m0", "m0", "m1", "m1", "m2", "m2", "m3", "m3"]);
    assert_eq!(proxy.stats().duplicated, 4);
}

#[tokio::test]
async fn a_held_request_is_forwarded_after_later_ones() {
    let (up, seen) = upstream().await;
    let mut base = cfg(up);
    base.reorder = 0.3;
    base.reorder_hold = Duration::from_secs(30);
    // A seed whose first exchange is held for k later ones, which themselves pass untouched.
    let (seed, k) = (0..10_000u64)
        .find_map(|seed| {
            let c = ProxyConfig {
                seed,
                ..base.clone()
            };
            let p = c.plan(4);
            let k = p[0].hold_for? as usize;
            p[1..=k]
                .iter()
                .all(|e| e.hold_for.is_none())
                .then_some((seed, k))
        })
        .unwrap();
    base.seed = seed;
    let proxy = Proxy::spawn("127.0.0.1:0".parse().unwrap(), base)
        .await
        .unwrap();
    let c = client();
    let url = proxy.url("/");
    let first = tokio::spawn({
        let c = c.clone();
        let url = url.clone();
        async move { post(&c, &url, "first").await }
    });
    wait_for(|| proxy.stats().reordered == 1).await;
    for i in 1..=k {
        let r = post(&c, &url, &format!("later{i}")).await.unwrap();
        assert_eq!(r.0, StatusCode::OK);
    }
    let r = first.await.unwrap().unwrap();
    assert_eq!(r, (StatusCode::OK, "ok:first".to_string()));
    let mut expected: Vec<String> = (1..=k).map(|i| format!("later{i}")).collect();
    expected.push("first".into());
    assert_eq!(*seen.lock().unwrap(), expected);
}

#[tokio::test]
async fn same_seed_same_outcomes() {
    async fn run(seed: u64) -> (Vec<StatusCode>, wsrm::ProxyStats) {
        let (up, _seen) = upstream().await;
        let mut c0 = cfg(up);
        c0.drop_requests = 0.2;
        c0.drop_responses = 0.1;
        c0.duplicate = 0.1;
        c0.seed = seed;
        let proxy = Proxy::spawn("127.0.0.1:0".parse().unwrap(), c0)
            .await
            .unwrap();
        let c = client();
        let mut statuses = Vec::new();
        for i in 0..60 {
            statuses.push(post(&c, &proxy.url("/"), &format!("m{i}")).await.unwrap().0);
        }
        (statuses, proxy.shutdown().await)
    }
    let a = run(7).await;
    let b = run(7).await;
    assert_eq!(a, b);
    assert_eq!(
        a.0.iter()
            .filter(|s| **s == StatusCode::BAD_GATEWAY)
            .count() as u64,
        a.1.dropped_requests + a.1.dropped_responses
    );
    assert!(a.1.dropped_requests > 0);
}
