//! `wsrm send`: send lines as messages in one reliable session.

use std::io::{BufRead, IsTerminal, Write as _};
use std::path::PathBuf;
use std::time::Instant;

use crate::common::{self, AddressingArg, RmArg, SoapArg};

const HELP: &str = "\
Each input line becomes the body <p xmlns=\"urn:wsrm:payload\">LINE</p> (XML-escaped) of one
message; --count N sends message-1 … message-N. Input must be UTF-8 without the control
characters XML 1.0 cannot carry (all below U+0020 but tab and carriage return): a FILE holding
such a line is refused before anything is sent (exit 2). Standard input (--lines -) is sent
line by line as it arrives (a live pipe works), so such a line stops the run there: the lines
before it are sent and the session closed, then exit 2. Inputs are never held whole: memory
does not grow with the run. All messages travel in one session, up to the window in flight at
once. A summary (sent, retransmitted, acknowledged, elapsed, msg/s) is printed at the end; a
progress bar is shown when standard error is a terminal.

With --request-reply each line is a request; --replies-to FILE appends each reply as one JSON
line {\"request\":N,\"number\":N,\"action\":…,\"body\":…} (request = the line's number in the run).

With --store sqlite:PATH the run is durable (issue 6): each message is stored, together with
the number of input lines taken, before it is first sent; retransmissions send the stored
bytes. After a crash (even SIGKILL), the same command with --resume continues the run: lines
already taken are not sent again as new messages, the unacknowledged ones are retransmitted on
the same sequence, and the rest are sent. A store holding a run is refused without --resume;
--resume of a finished run sends nothing and exits 0. With --request-reply, replies are stored
before they are acknowledged and requests until their reply is taken: a resumed run also
collects the replies to requests sent before the crash, and --replies-to FILE gets every reply
exactly once (the file's committed length is recorded with each reply; at start the file is
cut back to it).

The session opens as WCF's does: while the service cannot be reached (connection refused, an
HTTP error without a SOAP answer) the CreateSequence is sent again until --open-timeout runs
out, and the error then names the last failure; a TLS failure (the service's certificate not
trusted, ours refused or missing) ends the open at once.

Examples:
  wsrm send http://127.0.0.1:8080/svc --count 1000
  wsrm send http://127.0.0.1:8080/svc --lines input.txt --store sqlite:send.db --resume
  printf 'a\\nb\\n' | wsrm send http://127.0.0.1:8080/svc --lines - --request-reply --replies-to -
  wsrm send http://127.0.0.1:8080/svc --lines in.txt --request-reply --replies-to replies.jsonl \\
    --store sqlite:send.db --resume
  wsrm send https://localhost:8443/svc --count 10 --tls-ca ca.pem --tls-cert client.pem --tls-key client.key

Ctrl-C (SIGINT) or SIGTERM stops the run. A memory session is aborted: the service is told
(SequenceTerminated) and frees it at once, the summary counts what was acknowledged, and the
exit code is 130. A durable run (--store sqlite:PATH) is left in its store as a crash leaves it,
to continue with --resume (exit 130). A second signal exits at once.

Exit codes: 0 every message acknowledged (and, with --request-reply, every reply received) and
the session closed cleanly; 1 otherwise (the error says why: timeout, the service's fault, a
transport failure); 2 bad arguments; 130 interrupted by SIGINT or SIGTERM.";

/// Send messages in one reliable session.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Service URL (http:// or https://).
    url: String,
    /// Send message-1 … message-N.
    #[arg(long, value_name = "N", conflicts_with = "lines")]
    count: Option<u64>,
    /// Send each line of FILE (`-` = standard input).
    #[arg(long, value_name = "FILE|-")]
    lines: Option<String>,
    /// wsa:Action of the messages [default: urn:wsrm:payload/Deliver, or
    /// urn:wsrm:payload/Echo with --request-reply].
    #[arg(long, value_name = "URI")]
    action: Option<String>,
    /// Use a request-reply session and wait for each reply.
    #[arg(long)]
    request_reply: bool,
    /// Append each reply as a JSON line to FILE (`-` = standard output); exactly once across
    /// crashes with --store sqlite:PATH.
    #[arg(long, value_name = "FILE|-", requires = "request_reply")]
    replies_to: Option<String>,
    /// WS-RM version.
    #[arg(long, value_enum, default_value = "1.0")]
    rm: RmArg,
    /// SOAP version.
    #[arg(long, value_enum, default_value = "1.2")]
    soap: SoapArg,
    /// WS-Addressing version.
    #[arg(long, value_enum, default_value = "1.0")]
    addressing: AddressingArg,
    /// MaxTransferWindowSize (messages in flight).
    #[arg(long, value_name = "N", default_value_t = 8)]
    window: u32,
    /// OpenTimeout: how long to keep trying to open the session, in seconds (WCF's default,
    /// 60).
    #[arg(long, value_name = "SECONDS", default_value = "60", value_parser = common::parse_seconds)]
    open_timeout: std::time::Duration,
    /// Trust this CA certificate (PEM) for https URLs.
    #[arg(long, value_name = "F")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "F", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, value_name = "F", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where the session lives: `memory` (default) or `sqlite:PATH` (durable, resumable).
    #[arg(long, value_name = "memory|sqlite:PATH", default_value = "memory")]
    store: wsrm::store::StoreSpec,
    /// Continue the run recorded in --store (after a crash or kill).
    #[arg(long, requires = "store")]
    resume: bool,
}

/// How long an aborted run waits for its last exchanges (the SequenceTerminated fault) before
/// the process exits.
const ABORT_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

/// A hint for the TLS failures a user can mend with this command's options.
fn tls_hint(e: &wsrm::ClientError) -> &'static str {
    let wsrm::ClientError::Tls(t) = e else {
        return "";
    };
    if t.contains("UnknownIssuer") || t.contains("BadSignature") {
        " (is the service's CA given with --tls-ca?)"
    } else if t.contains("NotValidForName") {
        " (the service's certificate does not name the URL's host)"
    } else if t.contains("CertificateRequired") {
        " (the service wants a client certificate: --tls-cert F --tls-key F)"
    } else if t.contains("CaUsedAsEndEntity") {
        // `openssl req -x509` without a config makes exactly this: a self-signed
        // certificate with basicConstraints CA:TRUE, which WebPKI refuses to a server.
        " (the service's certificate is a CA certificate, basicConstraints CA:TRUE, as          `openssl req -x509` makes by default; TLS clients refuse it as a server's: make it with          `-addext basicConstraints=critical,CA:FALSE`, or sign it with a CA given to --tls-ca)"
    } else if t.contains("NotValidYet") {
        " (the service's certificate is not valid yet: check its notBefore and both clocks)"
    } else if t.contains("Expired") {
        " (the service's certificate has expired)"
    } else if t.contains("InvalidPurpose") {
        " (the service's certificate is not for TLS servers: its extendedKeyUsage lacks          serverAuth)"
    } else {
        ""
    }
}

/// What to do when a resumed run's sequence is unknown to the service.
fn resume_hint(resumed: bool, e: &wsrm::ClientError) -> &'static str {
    let unknown = e
        .fault()
        .is_some_and(|f| f.kind == wsrm_proto::msg::FaultKind::UnknownSequence);
    if resumed && unknown {
        " (the service no longer knows the stored sequence: it lost its sessions, e.g. it \
         restarted without a durable store. This run cannot be resumed: send the lines it did \
         not acknowledge in a new run, with a new store)"
    } else {
        ""
    }
}

/// The store label (and cursor name) of a `wsrm send` run.
const RUN_LABEL: &str = "wsrm-send";

/// Where a run's inputs come from. They are never held whole: a run of a hundred million
/// messages takes the memory of one of a thousand, and `--lines -` sends each line as it
/// arrives (a live pipe).
enum Inputs {
    /// `message-1` … `message-N`.
    Count(u64),
    /// The lines of a file, checked beforehand ([`scan_file`]).
    File(String),
    /// Standard input, checked line by line as it is read.
    Stdin,
}

/// The outcomes of a run's calls, taken in input order.
#[derive(Default)]
struct Outcomes {
    /// Calls that succeeded.
    ok: u64,
    /// The first failure, with its input's index in this run.
    first_failure: Option<(u64, wsrm::ClientError)>,
    /// Calls settled.
    done: u64,
}

impl Outcomes {
    fn settle(&mut self, r: Result<(), wsrm::ClientError>, bar: &indicatif::ProgressBar) {
        match r {
            Ok(()) => self.ok += 1,
            Err(e) => {
                if self.first_failure.is_none() {
                    self.first_failure = Some((self.done, e));
                }
            }
        }
        self.done += 1;
        bar.inc(1);
    }
}

/// Lines a reader hands over at once, at most (when more are already buffered).
const INPUT_CHUNK: usize = 64;

impl Inputs {
    /// The inputs after the first `skip`, each line checked; an unusable line ends them with
    /// its error.
    fn start(self, skip: u64, src: String) -> InputStream {
        let reader: Box<dyn std::io::Read + Send> = match self {
            Inputs::Count(n) => {
                return InputStream::Count {
                    next: skip.saturating_add(1),
                    last: n,
                }
            }
            Inputs::Stdin => Box::new(std::io::stdin()),
            Inputs::File(path) => match std::fs::File::open(&path) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    return InputStream::Failed(Some(format!("--lines {path}: {e}")));
                }
            },
        };
        // Reading blocks: on a thread of its own, a few chunks ahead of the session.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let reader = std::io::BufReader::new(reader);
        std::thread::spawn(move || read_lines(reader, skip, &src, &tx));
        InputStream::Read {
            rx,
            ready: std::collections::VecDeque::new(),
        }
    }
}

/// Reads, checks and hands over the lines after the first `skip`, in chunks of what is
/// already buffered (a line that arrives alone goes alone, at once).
fn read_lines(
    mut reader: std::io::BufReader<Box<dyn std::io::Read + Send>>,
    skip: u64,
    src: &str,
    tx: &tokio::sync::mpsc::Sender<Vec<Result<String, String>>>,
) {
    let mut chunk = Vec::new();
    let mut number = 0u64;
    while let Some(item) = next_line(&mut reader) {
        number += 1;
        let item = checked_line(src, number, item);
        let stop = item.is_err();
        if number > skip || stop {
            chunk.push(item);
        }
        if stop {
            break;
        }
        let hand_over =
            chunk.len() >= INPUT_CHUNK || (!chunk.is_empty() && reader.buffer().is_empty());
        if hand_over && tx.blocking_send(std::mem::take(&mut chunk)).is_err() {
            return;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(chunk);
    }
}

/// A run's inputs as the send loop takes them.
enum InputStream {
    /// `message-next` … `message-last`, made as they are taken.
    Count { next: u64, last: u64 },
    /// Lines from a reader thread.
    Read {
        rx: tokio::sync::mpsc::Receiver<Vec<Result<String, String>>>,
        ready: std::collections::VecDeque<Result<String, String>>,
    },
    /// The input could not be opened (given once).
    Failed(Option<String>),
}

impl InputStream {
    /// The next input; `None` at the end.
    async fn next(&mut self) -> Option<Result<String, String>> {
        match self {
            InputStream::Count { next, last } => {
                if *next > *last {
                    return None;
                }
                let line = format!("message-{next}");
                *next += 1;
                Some(Ok(line))
            }
            InputStream::Read { rx, ready } => {
                if ready.is_empty() {
                    ready.extend(rx.recv().await?);
                }
                ready.pop_front()
            }
            InputStream::Failed(e) => e.take().map(Err),
        }
    }
}

/// Line `number` of `--lines src` as read, or why it cannot be sent: not UTF-8, or a
/// character XML 1.0 cannot carry (a service could not read the message and would answer
/// every retransmission with HTTP 400).
fn checked_line(src: &str, number: u64, line: std::io::Result<String>) -> Result<String, String> {
    let line = line.map_err(|e| format!("--lines {src}: line {number}: {e}"))?;
    match common::xml_unrepresentable(&line) {
        Some((col, c)) => Err(format!(
            "--lines {src}: line {number}, character {}: U+{:04X} cannot appear in XML 1.0, not even escaped",
            col + 1,
            c as u32
        )),
        None => Ok(line),
    }
}

/// Checks every line of `path` before anything is sent (without keeping them); the number of
/// lines.
fn scan_file(path: &str) -> Result<u64, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("--lines {path}: {e}"))?;
    let mut reader = std::io::BufReader::new(f);
    let mut n = 0;
    while let Some(line) = next_line(&mut reader) {
        n += 1;
        checked_line(path, n, line).map_err(|e| format!("{e}; nothing was sent"))?;
    }
    Ok(n)
}

/// The next line of `reader` without its `\n` or `\r\n` (as `BufRead::lines` gives it, but
/// leaving the reader in the caller's hands); `None` at the end.
fn next_line(reader: &mut impl BufRead) -> Option<std::io::Result<String>> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => None,
        Ok(_) => {
            if line.ends_with('\n') {
                line.pop();
                if line.ends_with('\r') {
                    line.pop();
                }
            }
            Some(Ok(line))
        }
        Err(e) => Some(Err(e)),
    }
}

/// One reply as a JSON line (`--replies-to`).
fn reply_line(request: u64, r: &wsrm::Reply) -> Vec<u8> {
    let mut line = serde_json::json!({
        "request": request,
        "number": r.number,
        "action": &*r.action,
        "body": String::from_utf8_lossy(&r.body),
    })
    .to_string()
    .into_bytes();
    line.push(b'\n');
    line
}

/// Writes a reply to the plain `--replies-to` writer, if there is one.
fn write_reply(
    w: &std::sync::Mutex<Option<Box<dyn std::io::Write + Send>>>,
    request: u64,
    r: &wsrm::Reply,
) {
    if let Ok(mut w) = w.lock() {
        if let Some(w) = w.as_mut() {
            if let Err(e) = w.write_all(&reply_line(request, r)) {
                tracing::error!(error = %e, "cannot write a reply");
            }
        }
    }
}

/// Sends and reports; see the exit codes in the help.
pub fn run(args: Args) -> anyhow::Result<u8> {
    common::init_tracing();
    if args.rm == RmArg::Auto {
        return common::usage("--rm auto is for serve; choose 1.0 or 1.1");
    }
    // The inputs, and their number when it is known before the run (not for standard input).
    let (inputs, known_total) = match (&args.count, args.lines.as_deref()) {
        (Some(n), None) => (Inputs::Count(*n), Some(*n)),
        (None, Some("-")) => (Inputs::Stdin, None),
        // A file is checked whole before anything is sent.
        (None, Some(path)) => match scan_file(path) {
            Ok(n) => (Inputs::File(path.to_string()), Some(n)),
            Err(e) => return common::usage(e),
        },
        _ => return common::usage("give --count N or --lines FILE|-"),
    };
    let https = args.url.starts_with("https:");
    let binding = common::binding(args.rm, args.soap, args.addressing, https)
        .max_transfer_window_size(args.window)
        .open_timeout(args.open_timeout);
    if let Err(e) = binding
        .validate()
        .and_then(|_| binding.check_url(&args.url).map(|_| ()))
    {
        return common::usage(e);
    }
    let mut tls = wsrm::ClientTls::new();
    if let Some(ca) = &args.tls_ca {
        tls = match tls.with_ca_file(ca) {
            Ok(t) => t,
            Err(e) => return common::usage(e),
        };
    }
    if let (Some(c), Some(k)) = (&args.tls_cert, &args.tls_key) {
        tls = match tls.with_client_cert_files(c, k) {
            Ok(t) => t,
            Err(e) => return common::usage(e),
        };
    }
    let store = match &args.store {
        wsrm::store::StoreSpec::Memory => None,
        spec => match wsrm::store::Store::open(spec) {
            Ok(s) => Some(s),
            Err(e) => return common::usage(format!("--store {spec}: {e}")),
        },
    };
    // Inputs taken by the run before this one (--resume): input N of this run is line
    // skipped + N.
    let mut skipped = 0u64;
    if let Some(st) = &store {
        let taken = match st.cursor(RUN_LABEL).wait() {
            Ok(c) => c,
            Err(e) => return common::usage(format!("--store: {e}")),
        };
        let stored = match st.sources().wait() {
            Ok(s) => s
                .iter()
                .any(|s| s.record.label.as_deref() == Some(RUN_LABEL)),
            Err(e) => return common::usage(format!("--store: {e}")),
        };
        if (taken.is_some() || stored) && !args.resume {
            return common::usage(
                "--store holds a run already; pass --resume to continue it, or use a new store",
            );
        }
        skipped = taken.unwrap_or(0);
        if let Some(t) = known_total {
            skipped = skipped.min(t);
        }
        if skipped > 0 {
            match known_total {
                Some(t) => eprintln!(
                    "wsrm: resuming: {skipped} lines were taken before; {} left",
                    t - skipped
                ),
                None => eprintln!(
                    "wsrm: resuming: {skipped} lines were taken before; they are skipped in the input"
                ),
            }
        }
    }
    let action = args.action.clone().unwrap_or_else(|| {
        if args.request_reply {
            common::ECHO_ACTION.to_string()
        } else {
            common::ONE_WAY_ACTION.to_string()
        }
    });
    let bar = if std::io::stderr().is_terminal() {
        let (b, template) = match known_total {
            Some(t) => (
                indicatif::ProgressBar::new(t - skipped),
                "{bar:40} {pos}/{len} acknowledged  {per_sec}  eta {eta}",
            ),
            None => (
                indicatif::ProgressBar::no_length(),
                "{spinner} {pos} acknowledged  {per_sec}",
            ),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    // Where replies go: a durable file (exactly once, written in the store transaction that
    // takes the reply), or a plain writer.
    let mut reply_commit = None;
    let mut reply_writer: Option<Box<dyn std::io::Write + Send>> = None;
    match (args.replies_to.as_deref(), &store) {
        (None, _) => {}
        (Some("-"), _) => reply_writer = Some(Box::new(std::io::stdout())),
        (Some(path), Some(st)) => {
            let file = match common::DurableFile::open(st, path, common::REPLY_FILE_TABLE) {
                Ok(f) => f,
                Err(e) => return common::usage(format!("--replies-to {path}: {e}")),
            };
            reply_commit = Some(wsrm::ReplyCommit::new(move |request, reply| {
                Some(Box::new(file.append(reply_line(request, reply))) as wsrm::store::AppWrite)
            }));
        }
        (Some(path), None) => {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                Ok(f) => reply_writer = Some(Box::new(std::io::BufWriter::new(f))),
                Err(e) => return common::usage(format!("--replies-to {path}: {e}")),
            }
        }
    }
    let reply_writer = std::sync::Arc::new(std::sync::Mutex::new(reply_writer));
    let first_request = store
        .as_ref()
        .and_then(|st| st.cursor(RUN_LABEL).wait().ok().flatten())
        .unwrap_or(0)
        + 1;
    common::block_on(async move {
        let started = Instant::now();
        let opts = wsrm::ClientOptions {
            request_reply: args.request_reply,
            tls: Some(tls),
            seed: None,
            label: store.as_ref().map(|_| RUN_LABEL.to_string()),
            store: store.clone(),
            reply_commit,
        };
        let client = match wsrm::Client::open(&args.url, &binding, opts).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "wsrm: error: cannot open a session to {}: {e}{}",
                    args.url,
                    tls_hint(&e)
                );
                return Ok(common::EXIT_FAILED);
            }
        };
        let rr = args.request_reply;
        // Ctrl-C / SIGTERM (see HELP).
        let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        {
            let (c, flag, durable) = (client.clone(), interrupted.clone(), store.is_some());
            let stop = stop.clone();
            tokio::spawn(async move {
                common::terminated().await;
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                // No further input is taken (standard input may never end).
                stop.notify_one();
                if durable {
                    eprintln!(
                        "\nwsrm: interrupted; the run stays in its store: continue it with --resume"
                    );
                    std::process::exit(common::EXIT_INTERRUPTED.into());
                }
                // The calls still waiting fail at once; the run's end reports them.
                c.abort();
                common::terminated().await;
                std::process::exit(common::EXIT_INTERRUPTED.into());
            });
        }
        // A resumed request-reply run: replies to the requests sent before the crash.
        let earlier = client.recovered_waiting();
        let recovered = {
            let (c, w) = (client.clone(), reply_writer.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while let Some(r) = c.next_recovered_reply().await {
                    write_reply(&w, r.request, &r.reply);
                    n += 1;
                }
                n
            })
        };
        let limit = binding.session.max_transfer_window_size as usize * 4;
        let mut inflight: std::collections::VecDeque<wsrm::Pending<()>> = Default::default();
        let mut outcomes = Outcomes::default();
        let src = args.lines.clone().unwrap_or_default();
        let mut input = inputs.start(skipped, src);
        // Inputs taken by this run; an input that cannot be sent stops the run.
        let mut taken = 0u64;
        let mut unusable = None;
        loop {
            // After a failure the session takes nothing more (and standard input may never
            // end): the run stops taking input.
            if outcomes.first_failure.is_some() {
                break;
            }
            let line = tokio::select! {
                next = input.next() => match next {
                    Some(Ok(line)) => line,
                    Some(Err(e)) => {
                        unusable = Some(e);
                        break;
                    }
                    None => break,
                },
                _ = stop.notified() => break,
            };
            let i = taken;
            taken += 1;
            let body = common::payload_for(&line);
            let p = if rr {
                let f = client.start_request(&action, body);
                let (w, request) = (reply_writer.clone(), first_request + i);
                wsrm::Pending::map(f, move |r| write_reply(&w, request, &r))
            } else {
                wsrm::Pending::map(client.start_send(&action, body), |_| ())
            };
            inflight.push_back(p);
            if inflight.len() >= limit {
                if let Some(f) = inflight.pop_front() {
                    outcomes.settle(f.await, &bar);
                }
            }
        }
        drop(input);
        // The run's inputs: all of them when their number was known, else those taken.
        let total = known_total.map_or(taken, |t| t - skipped);
        // Close as soon as the last message is queued, as a WCF client closes after its last
        // call: the close waits for every acknowledgement (and reply) before it ends the
        // sequence. Waiting for each send first would leave the session open while the last
        // message is unacknowledged, and a destination that will not acknowledge a duplicate
        // again (gSOAP quirk 19: its ack went to a copy the network lost) is then only asked
        // again by an RM 1.1 close (CloseSequence, docs/engine.md deviation 12): the last send
        // timed out after SendTimeout (a CI run of 2026-12-07, `wsrm->gsoap rm1.1 one-way
        // proxy`).
        let closing = {
            let c = client.clone();
            tokio::spawn(async move { c.close().await })
        };
        while let Some(f) = inflight.pop_front() {
            outcomes.settle(f.await, &bar);
        }
        bar.finish_and_clear();
        // The first failure, named by its input (the Nth line, or message-N with --count),
        // counted from the first line also when the run resumed.
        let ok = outcomes.ok;
        let mut first_err = outcomes.first_failure.as_ref().map(|(i, e)| {
            format!(
                "input {}: {e}{}",
                skipped + i + 1,
                resume_hint(args.resume, e)
            )
        });
        let earlier_answered = if first_err.is_none() {
            recovered.await.unwrap_or(0)
        } else {
            recovered.abort();
            0
        };
        if first_err.is_none() && earlier_answered < earlier {
            first_err = Some(format!(
                "{} of {earlier} replies to requests sent before the restart did not arrive",
                earlier - earlier_answered
            ));
        }
        if let Ok(mut w) = reply_writer.lock() {
            if let Some(w) = w.as_mut() {
                let _ = w.flush();
            }
        }
        let close = if first_err.is_none() {
            match closing.await {
                Ok(r) => r.map(|_| ()),
                // The task is aborted only below; a panic in it ended the close.
                Err(_) => Err(wsrm::ClientError::Closed),
            }
        } else {
            client.abort();
            closing.abort();
            // Let the SequenceTerminated fault reach the service before the process exits.
            let _ = tokio::time::timeout(ABORT_FLUSH, client.finished()).await;
            Ok(())
        };
        let stats = client.stats();
        let elapsed = started.elapsed();
        let rate = ok as f64 / elapsed.as_secs_f64().max(1e-9);
        let was_interrupted = interrupted.load(std::sync::atomic::Ordering::SeqCst);
        // An interrupted or failed run need not have sent every input: say how many went out.
        let sent = if was_interrupted || first_err.is_some() {
            format!("{} of {total}", stats.sent.min(total))
        } else {
            total.to_string()
        };
        println!(
            "sent {sent}, retransmitted {}, acknowledged {ok}{}, elapsed {:.3} s, {:.1} msg/s",
            stats.retransmitted,
            if rr { " (replies received)" } else { "" },
            elapsed.as_secs_f64(),
            rate
        );
        if earlier > 0 {
            println!(
                "replies to requests sent before the restart: {earlier_answered} of {earlier}"
            );
        }
        if was_interrupted {
            eprintln!("wsrm: interrupted: the session was aborted ({ok} of {total} acknowledged)");
            return Ok(common::EXIT_INTERRUPTED);
        }
        if let Some(e) = first_err {
            if ok < total {
                eprintln!(
                    "wsrm: error: {} of {total} messages failed; first: {e}",
                    total - ok
                );
            } else {
                eprintln!("wsrm: error: {e}");
            }
            return Ok(common::EXIT_FAILED);
        }
        if let Err(e) = close {
            eprintln!("wsrm: error: the session did not close cleanly: {e}");
            return Ok(common::EXIT_FAILED);
        }
        if let Some(e) = unusable {
            // Standard input is checked as it is read: the lines before were sent.
            eprintln!(
                "wsrm: error: {e}; the run stopped there, after the {taken} line(s) before it"
            );
            return Ok(common::EXIT_USAGE);
        }
        Ok(common::EXIT_OK)
    })?
}
