//! `wsrm serve`: host a reliable-session service with a one-way and an echo operation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::{self, AddressingArg, JsonEcho, RmArg, SoapArg};

const HELP: &str = "\
Every operation is accepted. A two-way request (request-reply session, a message with a
MessageID and ReplyTo) is answered with its own body and the action <request action>Response;
anything else is a one-way message. Each delivered message is appended to --deliver-to as one
JSON line: {\"sequence\":…,\"number\":…,\"action\":…,\"body\":…} (body = the raw XML content of
the SOAP Body). The service prints the URL it listens on and runs until SIGINT/SIGTERM. It then
stops taking requests, lets the sessions' handlers write the messages already acknowledged (up to
--close-timeout), and prints its counters. A second signal stops it at once.

With --store sqlite:PATH the sessions are durable (issue 6): every received message is stored
before it is acknowledged, a restarted service resumes the stored sessions, and --deliver-to FILE
receives every message exactly once across crashes (even SIGKILL): each line is written and the
file's committed length recorded in the same store transaction as the delivery; at startup the
file is cut back to the committed length and uncommitted messages are delivered again. A store
that is corrupt, of another application or in use by another process is refused (exit 2).

Examples:
  wsrm serve --listen 127.0.0.1:8080 --deliver-to delivered.jsonl
  wsrm serve --listen 127.0.0.1:8080 --store sqlite:svc.db --deliver-to delivered.jsonl
  wsrm serve --listen 127.0.0.1:8080 --rm 1.1 --soap 1.1 --addressing 2004/08
  wsrm serve --listen 127.0.0.1:8443 --tls-cert server.pem --tls-key server.key --client-ca ca.pem

Exit codes: 0 stopped by SIGINT/SIGTERM; 1 runtime failure; 2 bad arguments (unreadable
certificate, address in use, ...).";

/// Host a reliable-session service (one-way + echo) over HTTP or HTTPS.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; the URL is printed).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// WS-RM version(s) to answer.
    #[arg(long, value_enum, default_value = "auto")]
    rm: RmArg,
    /// SOAP version of the binding.
    #[arg(long, value_enum, default_value = "1.2")]
    soap: SoapArg,
    /// WS-Addressing version of the binding.
    #[arg(long, value_enum, default_value = "1.0")]
    addressing: AddressingArg,
    /// In-order delivery.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    ordered: bool,
    /// MaxTransferWindowSize (receive buffer per session).
    #[arg(long, value_name = "N", default_value_t = 8)]
    window: u32,
    /// MaxPendingChannels.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_pending_channels: u32,
    /// Cap on established sessions.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_sessions: usize,
    /// maxReceivedMessageSize in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 65_536)]
    max_message_size: u64,
    /// Append delivered messages as JSON lines to FILE (`-` = standard output).
    #[arg(long, value_name = "FILE|-")]
    deliver_to: Option<String>,
    /// Where sessions live: `memory` (WCF's behaviour, lost on exit) or `sqlite:PATH`
    /// (durable: survives crashes; exactly-once delivery to --deliver-to FILE).
    #[arg(long, value_name = "memory|sqlite:PATH", default_value = "memory")]
    store: wsrm::store::StoreSpec,
    /// Server certificate chain (PEM); enables HTTPS.
    #[arg(long, value_name = "F", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, value_name = "F", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA (mutual TLS); sequences are bound to the
    /// client certificate that created them.
    #[arg(long, value_name = "F", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// At SIGINT/SIGTERM, how long the handlers may take to write the messages already
    /// acknowledged, in seconds (WCF's ServiceHost CloseTimeout, 10). With a durable store
    /// nothing is waited for: what was not written is delivered after the restart.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = common::parse_seconds)]
    close_timeout: std::time::Duration,
}

/// Runs the service until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<u8> {
    common::init_tracing();
    let https = args.tls_cert.is_some();
    let binding = common::binding(
        if args.rm == RmArg::Auto {
            RmArg::V10
        } else {
            args.rm
        },
        args.soap,
        args.addressing,
        https,
    )
    .ordered(args.ordered)
    .max_transfer_window_size(args.window)
    .max_pending_channels(args.max_pending_channels)
    .max_received_message_size(args.max_message_size);
    if let Err(e) = binding.validate() {
        return common::usage(e);
    }
    let store = match &args.store {
        wsrm::store::StoreSpec::Memory => None,
        spec => match wsrm::store::Store::open(spec) {
            Ok(s) => Some(s),
            Err(e) => return common::usage(format!("--store {spec}: {e}")),
        },
    };
    let durable_file = match (&store, args.deliver_to.as_deref()) {
        (Some(st), Some(path)) if path != "-" => {
            match common::DurableFile::open(st, path, common::DELIVER_FILE_TABLE) {
                Ok(f) => Some(f),
                Err(e) => return common::usage(format!("--deliver-to {path}: {e}")),
            }
        }
        _ => None,
    };
    let sink: Box<dyn std::io::Write + Send> = match args.deliver_to.as_deref() {
        _ if durable_file.is_some() => Box::new(std::io::sink()),
        None => Box::new(std::io::sink()),
        Some("-") => Box::new(std::io::stdout()),
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => return common::usage(format!("--deliver-to {path}: {e}")),
        },
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            let t = match wsrm::ServerTls::from_pem_files(c, k) {
                Ok(t) => t,
                Err(e) => return common::usage(e),
            };
            match &args.client_ca {
                None => Some(t),
                Some(ca) => match t.with_client_ca_file(ca, wsrm::ClientAuth::Required) {
                    Ok(t) => Some(t),
                    Err(e) => return common::usage(e),
                },
            }
        }
        _ => None,
    };
    let sink = Arc::new(Mutex::new(sink));
    let delivered = Arc::new(AtomicU64::new(0));
    common::block_on(async move {
        let (s, d) = (sink.clone(), delivered.clone());
        let mut builder = wsrm::Service::builder(binding)
            .max_sessions(args.max_sessions)
            .close_timeout(args.close_timeout)
            .rm_versions(if args.rm == RmArg::Auto {
                wsrm::RmVersions::Any
            } else {
                wsrm::RmVersions::BindingOnly
            });
        builder = match durable_file {
            Some(file) => builder.handler(move |info: &wsrm::SessionInfo| FileInbox {
                sequence: info.sequence.to_string(),
                file: file.clone(),
                delivered: d.clone(),
                line: None,
            }),
            None => builder.handler(move |info: &wsrm::SessionInfo| JsonEcho {
                sequence: info.sequence.to_string(),
                sink: s.clone(),
                delivered: d.clone(),
            }),
        };
        if let Some(st) = &store {
            builder = builder.store(st.clone());
        }
        if let Some(t) = tls {
            builder = builder.tls(t);
        }
        let svc = match builder.bind(args.listen).await {
            Ok(s) => s,
            Err(e) => return common::usage(e),
        };
        eprintln!("wsrm: listening on {}", svc.url("/"));
        if args.deliver_to.as_deref() != Some("-") {
            println!("listening on {}", svc.url("/"));
        }
        common::terminated().await;
        eprintln!("wsrm: stopping");
        let before = svc.stats();
        // A second signal stops at once (what the handlers did not write is then lost, as
        // with a kill; a durable store delivers it after the restart).
        let report = tokio::select! {
            r = svc.shutdown() => Some(r),
            _ = common::terminated() => None,
        };
        let st = report.map_or(before, |r| r.stats);
        eprintln!(
            "wsrm: sessions created {}, closed {}, failed {}, stopped {}, messages delivered {}, requests refused {}",
            st.sessions_created,
            st.sessions_closed,
            st.sessions_failed,
            report.map_or(0, |r| r.sessions_stopped),
            delivered.load(Ordering::Relaxed),
            st.refused
        );
        match report {
            Some(r) if !r.drained() => eprintln!(
                "wsrm: the close timeout ({} s) ran out: {} acknowledged messages were not delivered, {} handlers were still working",
                args.close_timeout.as_secs_f64(),
                r.unhandled,
                r.in_progress
            ),
            Some(r) if r.stored > 0 => eprintln!(
                "wsrm: {} acknowledged messages wait in the store; a service started on it delivers them",
                r.stored
            ),
            Some(_) => {}
            None => eprintln!("wsrm: stopped by a second signal without waiting for the handlers"),
        }
        if let Ok(mut w) = sink.lock() {
            let _ = w.flush();
        }
        Ok(common::EXIT_OK)
    })?
}

/// The exactly-once handler of `--deliver-to FILE` with a durable store.
struct FileInbox {
    sequence: String,
    file: common::DurableFile,
    delivered: Arc<AtomicU64>,
    line: Option<(u64, Vec<u8>)>,
}

impl wsrm::SessionHandler for FileInbox {
    fn handle(&mut self, d: wsrm::Delivery) -> wsrm::HandlerFuture<'_> {
        let mut line = serde_json::json!({
            "sequence": self.sequence,
            "number": d.number,
            "action": &*d.action,
            "body": String::from_utf8_lossy(&d.body),
        })
        .to_string()
        .into_bytes();
        line.push(b'\n');
        self.line = Some((d.number, line));
        let out = if d.expects_reply {
            wsrm::Outcome::Reply {
                action: Arc::from(format!("{}Response", d.action)),
                body: d.body.clone(),
            }
        } else {
            wsrm::Outcome::NoReply
        };
        Box::pin(async move { out })
    }

    fn commit(&mut self, number: u64) -> Option<wsrm::store::AppWrite> {
        let (n, line) = self.line.take()?;
        if n != number {
            return None;
        }
        let delivered = self.delivered.clone();
        let write = self.file.append(line);
        Some(Box::new(move |tx| {
            write(tx)?;
            delivered.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }))
    }
}
