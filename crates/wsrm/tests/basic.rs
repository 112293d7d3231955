//! Client and service over loopback HTTP without faults.

mod common;

use common::*;
use wsrm::{Binding, Client, ClientOptions, Service};

async fn one_way(binding: Binding, n: usize) {
    let log = Log::default();
    let svc = recording_echo_service(&binding, &log).await;
    let client = Client::open(&svc.url("/svc"), &binding, ClientOptions::default())
        .await
        .unwrap();
    for i in 1..=n {
        let number = client.send(ONEWAY, payload(i)).await.unwrap();
        assert_eq!(number, i as u64);
    }
    // The service's per-session counters, read from its engine while the session is open.
    let sequence = client.sequence_id().unwrap();
    let on_service = svc.session_stats(&sequence).unwrap();
    assert_eq!(on_service.delivered, n as u64);
    assert_eq!(on_service.duplicates_dropped, 0);
    let stats = client.close().await.unwrap();
    // WS-RM 1.0 closes with an empty LastMessage that takes the next number (§4.2).
    let extra = u64::from(binding.session.reliable_messaging_version == wsrm::RmVersion::Wsrm10);
    assert_eq!(stats.acknowledged, n as u64 + extra);
    assert_eq!(stats.sent, n as u64 + extra);
    // Gone with the session.
    wait_for(|| svc.session_stats(&sequence).is_none()).await;
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
    let svc = recording_echo_service(&binding, &log).await;
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

#[tokio::test]
async fn one_service_answers_each_client_in_its_own_rm_version() {
    init_tracing();
    let log = Log::default();
    let svc = Service::builder(Binding::ws_http())
        .handler(recorder(&log))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    for (i, b) in [Binding::ws_http(), Binding::ws2007_http()]
        .into_iter()
        .enumerate()
    {
        let c = Client::open(&svc.url("/svc"), &b, ClientOptions::default())
            .await
            .unwrap();
        c.send(ONEWAY, payload(i + 1)).await.unwrap();
        c.close().await.unwrap();
    }
    let got: Vec<String> = log.lock().unwrap().iter().map(|s| s.body.clone()).collect();
    assert_eq!(got, vec![payload(1), payload(2)]);
}

#[tokio::test]
async fn a_service_configured_to_one_version_refuses_the_other() {
    let svc = Service::builder(Binding::ws_http())
        .rm_versions(wsrm::RmVersions::BindingOnly)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = Binding::ws2007_http().open_timeout(std::time::Duration::from_secs(2));
    let err = Client::open(&svc.url("/svc"), &b, ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, wsrm::ClientError::Faulted(_)), "{err:?}");
    assert_eq!(svc.stats().sessions_created, 0);
}

#[tokio::test]
async fn abort_fails_the_session_on_the_service() {
    let svc = Service::builder(Binding::ws2007_http())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = Client::open(
        &svc.url("/svc"),
        &Binding::ws2007_http(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    c.send(ONEWAY, payload(1)).await.unwrap();
    c.abort();
    let err = c.send(ONEWAY, payload(2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            wsrm::ClientError::Closed
                | wsrm::ClientError::Refused(wsrm_proto::SendError::NotOpen)
                | wsrm::ClientError::Faulted(wsrm::SessionError::Aborted)
        ),
        "{err:?}"
    );
    for _ in 0..2000 {
        if svc.stats().sessions_failed == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(svc.stats().sessions_failed, 1);
    assert_eq!(svc.stats().sessions_active, 0);
}

#[tokio::test]
async fn shutdown_closes_open_keep_alive_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let binding = Binding::ws_http();
    let log = Log::default();
    let svc = recording_echo_service(&binding, &log).await;
    // Two raw keep-alive connections: one after a complete exchange, one that never sent.
    let mut used = tokio::net::TcpStream::connect(svc.local_addr())
        .await
        .unwrap();
    let mut fresh = tokio::net::TcpStream::connect(svc.local_addr())
        .await
        .unwrap();
    used.write_all(b"GET /svc HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = used.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 405"));
    // The header read timeout (30 s) is far away: only the shutdown can close them now.
    let start = std::time::Instant::now();
    svc.shutdown().await;
    for tcp in [&mut used, &mut fresh] {
        let eof = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(eof.is_ok(), "a connection stayed open after the shutdown");
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

/// A service without a handler acknowledges one-way messages without running anything (no
/// handler task); a request still goes to the acknowledge-only handler (on a task started for
/// it), which answers it with no reply, so the caller's SendTimeout ends the call.
#[tokio::test]
async fn a_service_without_a_handler_acknowledges_and_drops() {
    init_tracing();
    for request_reply in [false, true] {
        let binding = Binding::ws_http().send_timeout(std::time::Duration::from_secs(1));
        let svc = Service::builder(binding.clone())
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let opts = ClientOptions {
            request_reply,
            ..ClientOptions::default()
        };
        let client = Client::open(&svc.url("/svc"), &binding, opts)
            .await
            .unwrap();
        for i in 1..=5 {
            assert_eq!(client.send(ONEWAY, payload(i)).await.unwrap(), i as u64);
        }
        let sequence = client.sequence_id().unwrap();
        if !request_reply {
            assert_eq!(svc.session_stats(&sequence).unwrap().delivered, 5);
            client.close().await.unwrap();
            assert_eq!(svc.stats().delivered, 5);
            wait_for(|| svc.session_stats(&sequence).is_none()).await;
            continue;
        }
        let r = client.request(ECHO, payload(6)).await;
        assert!(matches!(r, Err(wsrm::ClientError::Timeout { .. })), "{r:?}");
        assert_eq!(svc.session_stats(&sequence).unwrap().delivered, 6);
        client.abort();
    }
}
