//! Client and service over loopback HTTP without faults.

mod common;

use common::*;
use wsrm::{Binding, Client, ClientOptions, Service};

async fn one_way(binding: Binding, n: usize) {
    let log = Log::default();
    let svc = Service::builder(binding.clone())
        .handler(recorder(&log))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    for i in 1..=n {
        let number = client.send(ONEWAY, payload(i)).await.unwrap();
        assert_eq!(number, i as u64);
    }
    let stats = client.close().await.unwrap();
    // WS-RM 1.0 closes with an empty LastMessage that takes the next number (§4.2).
    let extra = u64::from(binding.session.reliable_messaging_version == wsrm::RmVersion::Wsrm10);
    assert_eq!(stats.acknowledged, n as u64 + extra);
    assert_eq!(stats.sent, n as u64 + extra);
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len(), n);
    for (i, s) in got.iter().enumerate() {
        assert_eq!(s.number, i as u64 + 1);
        assert_eq!(s.body, payload(i + 1));
        assert_eq!(s.action, ONEWAY);
    }
}

#[tokio::test]
async fn one_way_rm10() {
    init_tracing();
    one_way(Binding::ws_http(), 20).await;
}

#[tokio::test]
async fn one_way_rm11() {
    init_tracing();
    one_way(Binding::ws2007_http(), 20).await;
}

async fn request_reply(binding: Binding, n: usize) {
    let log = Log::default();
    let svc = Service::builder(binding.clone())
        .handler(recorder(&log))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let opts = ClientOptions {
        request_reply: true,
        ..ClientOptions::default()
    };
    let client = Client::open(&svc.url("/svc"), &binding, opts)
        .await
        .unwrap();
    for i in 1..=n {
        let r = client.request(ECHO, payload(i)).await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!("<echo xmlns=\"urn:wsrm:test\">{}</echo>", payload(i))
        );
        assert_eq!(&*r.action, "urn:wsrm:test/EchoResponse");
    }
    client.close().await.unwrap();
    assert_eq!(log.lock().unwrap().len(), n);
}

#[tokio::test]
async fn request_reply_rm10() {
    init_tracing();
    request_reply(Binding::ws_http(), 10).await;
}

#[tokio::test]
async fn request_reply_rm11() {
    init_tracing();
    request_reply(Binding::ws2007_http(), 10).await;
}
