//! HTTPS and mutual TLS with certificates generated in the test (rcgen), and the hijack case:
//! with mutual TLS a sequence belongs to the client certificate that created it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use wsrm::{
    Binding, Client, ClientAuth, ClientError, ClientOptions, ClientTls, ServerTls, Service,
};
use wsrm_proto::msg::{Action, Body, FaultKind, Message, RmVersion, SequenceHeader};

struct Pki {
    ca_pem: String,
    server: (String, String),
    alice: (String, String),
    mallory: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca_pem: ca_cert.pem(),
        server: leaf(vec!["127.0.0.1".into(), "localhost".into()]),
        alice: leaf(vec!["alice".into()]),
        mallory: leaf(vec!["mallory".into()]),
    }
}

async fn service(p: &Pki, mutual: bool, binding: &Binding, log: &Log) -> Service {
    service_with(p, mutual, binding, log, None).await
}

async fn service_with(
    p: &Pki,
    mutual: bool,
    binding: &Binding,
    log: &Log,
    store: Option<wsrm::store::Store>,
) -> Service {
    let mut tls = ServerTls::from_pem(p.server.0.as_bytes(), p.server.1.as_bytes()).unwrap();
    if mutual {
        tls = tls
            .with_client_ca_pem(p.ca_pem.as_bytes(), ClientAuth::Required)
            .unwrap();
    }
    let mut b = Service::builder(binding.clone())
        .tls(tls)
        .handler(recorder(log));
    if let Some(store) = store {
        b = b.store(store);
    }
    b.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn client_tls(p: &Pki, cert: Option<&(String, String)>) -> ClientTls {
    let t = ClientTls::new().with_ca_pem(p.ca_pem.as_bytes()).unwrap();
    match cert {
        Some((c, k)) => t.with_client_cert_pem(c.as_bytes(), k.as_bytes()).unwrap(),
        None => t,
    }
}

#[tokio::test]
async fn https_one_way_and_request_reply() {
    init_tracing();
    let p = pki();
    let binding = Binding::ws2007_http().https();
    let log = Log::default();
    let svc = service(&p, false, &binding, &log).await;
    assert!(svc.url("/").starts_with("https://127.0.0.1:"));
    let c = Client::open(
        &svc.url("/svc"),
        &binding,
        ClientOptions {
            tls: Some(client_tls(&p, None)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 1..=10 {
        c.send(ONEWAY, payload(i)).await.unwrap();
    }
    c.close().await.unwrap();
    let rr = Client::open(
        &svc.url("/svc"),
        &binding,
        ClientOptions {
            request_reply: true,
            tls: Some(client_tls(&p, None)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = rr.request(ECHO, payload(11)).await.unwrap();
    assert_eq!(
        r.body,
        Bytes::from(format!(
            "<echo xmlns=\"urn:wsrm:test\">{}</echo>",
            payload(11)
        ))
    );
    rr.close().await.unwrap();
    let got: Vec<String> = settled(&log, 11)
        .await
        .into_iter()
        .map(|s| s.body)
        .collect();
    let want: Vec<String> = (1..=11).map(payload).collect();
    assert_eq!(got, want);
}

/// Opens a session with `tls` that must fail, and fail well before the binding's OpenTimeout
/// (WCF's 1 min): a TLS failure ends the open at once instead of being retried.
async fn open_failing_at_once(svc: &Service, binding: &Binding, tls: ClientTls) -> ClientError {
    let opts = ClientOptions {
        tls: Some(tls),
        ..Default::default()
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        Client::open(&svc.url("/svc"), binding, opts),
    )
    .await
    .expect("a TLS failure was retried instead of ending the open")
    .unwrap_err()
}

#[tokio::test]
async fn https_refuses_an_untrusted_server() {
    let p = pki();
    let other = pki();
    // WCF's OpenTimeout (1 min): a TLS failure ends the open at once, not after it.
    let binding = Binding::ws_http().https();
    let log = Log::default();
    let svc = service(&p, false, &binding, &log).await;
    let err = open_failing_at_once(&svc, &binding, client_tls(&other, None)).await;
    assert!(
        matches!(&err, ClientError::Tls(t) if t.contains("invalid peer certificate")),
        "{err:?}"
    );
    assert_eq!(svc.stats().sessions_created, 0);
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let p = pki();
    let binding = Binding::ws_http().https();
    let log = Log::default();
    let svc = service(&p, true, &binding, &log).await;
    let err = open_failing_at_once(&svc, &binding, client_tls(&p, None)).await;
    assert!(
        matches!(&err, ClientError::Tls(t) if t.contains("CertificateRequired")),
        "{err:?}"
    );
    let ok = Client::open(
        &svc.url("/svc"),
        &binding,
        ClientOptions {
            tls: Some(client_tls(&p, Some(&p.alice))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ok.send(ONEWAY, payload(1)).await.unwrap();
    ok.close().await.unwrap();
    assert_eq!(settled(&log, 1).await.len(), 1);
}

/// A raw HTTPS client presenting `cert`.
fn raw_tls_client(
    p: &Pki,
    cert: &(String, String),
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut p.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert.0.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pemfile::private_key(&mut cert.1.as_bytes())
        .unwrap()
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_only()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(conn)
}

#[tokio::test]
async fn hijacked_sequence_is_refused_and_the_session_goes_on() {
    hijack(None).await;
}

/// Durable service: the forged message is refused before anything of it is stored (a stored
/// copy would be delivered instead of Alice's message 6 after a restart).
#[tokio::test]
async fn hijacked_sequence_is_refused_before_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        wsrm::store::Store::open_sqlite(dir.path().join("h.db"), &Default::default()).unwrap();
    hijack(Some(store)).await;
}

async fn hijack(store: Option<wsrm::store::Store>) {
    init_tracing();
    let p = pki();
    let binding = Binding::ws_http().https();
    let log = Log::default();
    let svc = service_with(&p, true, &binding, &log, store.clone()).await;
    let alice = Client::open(
        &svc.url("/svc"),
        &binding,
        ClientOptions {
            tls: Some(client_tls(&p, Some(&p.alice))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for i in 1..=5 {
        alice.send(ONEWAY, payload(i)).await.unwrap();
    }
    let seq = alice.sequence_id().unwrap();
    // Mallory (valid certificate, other identity) injects message 6 and a TerminateSequence.
    let mallory = raw_tls_client(&p, &p.mallory);
    let mut forged = Message::new(
        RmVersion::Wsrm10,
        Action::Other(Arc::from(ONEWAY)),
        Body::Application(Bytes::from_static(b"<evil xmlns=\"urn:x\"/>")),
    );
    forged.sequence = Some(SequenceHeader {
        identifier: seq.clone(),
        number: 6,
        last_message: false,
    });
    forged.message_id = Some(Arc::from("urn:uuid:00000000-0000-0000-0000-00000000bad1"));
    forged.to = Some(Arc::from(svc.url("/svc").as_str()));
    let mut terminate = Message::new(
        RmVersion::Wsrm10,
        Action::TerminateSequence,
        Body::TerminateSequence {
            identifier: seq.clone(),
            last_msg_number: None,
        },
    );
    terminate.message_id = Some(Arc::from("urn:uuid:00000000-0000-0000-0000-00000000bad2"));
    for m in [forged, terminate] {
        let req = http::Request::post(svc.url("/svc"))
            .header("content-type", SOAP12_CT)
            .body(Full::new(Bytes::from(envelope(&m))))
            .unwrap();
        let resp = mallory.request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 500);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let fault = decode(&body);
        match fault.body {
            Body::Fault(f) => {
                assert_eq!(f.kind, FaultKind::UnknownSequence);
                assert_eq!(f.detail.identifier(), Some(&seq));
            }
            other => panic!("expected a fault, got {other:?}"),
        }
    }
    if let Some(store) = &store {
        let info = store.destination(&seq).await.unwrap().expect("stored");
        assert_eq!(info.ranges, vec![(1, 5)], "nothing of Mallory's stored");
    }
    // Alice's session is undisturbed: message 6 is hers.
    for i in 6..=10 {
        assert_eq!(alice.send(ONEWAY, payload(i)).await.unwrap(), i as u64);
    }
    alice.close().await.unwrap();
    let got: Vec<String> = settled(&log, 10)
        .await
        .into_iter()
        .map(|s| s.body)
        .collect();
    let want: Vec<String> = (1..=10).map(payload).collect();
    assert_eq!(got, want);
    wait_for(|| svc.stats().sessions_closed == 1).await;
    assert_eq!(svc.stats().sessions_failed, 0);
}
