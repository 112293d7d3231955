//! Helpers shared by the runtime subcommands (serve, send, proxy, demo): logging set-up,
//! the tokio runtime, signals, usage errors.

use std::future::Future;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed (not every message acknowledged, session faulted, ...).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad input or bad usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: stopped by SIGINT (Ctrl-C) or SIGTERM before the run was over (128 + SIGINT, as
/// shells report an interrupted command).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Logs go to stderr, filtered by `RUST_LOG` (default: warnings only).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs `fut` on a multi-threaded tokio runtime.
pub fn block_on<F: Future>(fut: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(fut))
}

/// Prints a usage error the way main.rs prints errors and returns [`EXIT_USAGE`].
pub fn usage(msg: impl std::fmt::Display) -> anyhow::Result<u8> {
    eprintln!("wsrm: error: {msg}");
    Ok(EXIT_USAGE)
}

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `--rm` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RmArg {
    /// WS-RM February 2005.
    #[value(name = "1.0")]
    V10,
    /// WS-RM 1.1.
    #[value(name = "1.1")]
    V11,
    /// Both; each client answered in its own version (serve only).
    Auto,
}

/// `--soap` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SoapArg {
    /// SOAP 1.1 (text/xml + SOAPAction).
    #[value(name = "1.1")]
    V11,
    /// SOAP 1.2 (application/soap+xml).
    #[value(name = "1.2")]
    V12,
}

/// `--addressing` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AddressingArg {
    /// WS-Addressing August 2004 (member submission).
    #[value(name = "2004/08")]
    V200408,
    /// WS-Addressing 1.0 (W3C).
    #[value(name = "1.0")]
    V10,
}

/// Builds the custom binding the CLI flags describe.
pub fn binding(rm: RmArg, soap: SoapArg, addressing: AddressingArg, https: bool) -> wsrm::Binding {
    let mut b = wsrm::Binding::custom()
        .soap(match soap {
            SoapArg::V11 => wsrm::SoapVersion::Soap11,
            SoapArg::V12 => wsrm::SoapVersion::Soap12,
        })
        .addressing(match addressing {
            AddressingArg::V200408 => wsrm::AddressingVersion::Wsa200408,
            AddressingArg::V10 => wsrm::AddressingVersion::Wsa10,
        });
    if rm == RmArg::V11 {
        b = b.rm_version(wsrm::RmVersion::Wsrm11);
    }
    if https {
        b = b.https();
    }
    b
}

/// Parses a positive number of seconds (fractions allowed), e.g. for `--open-timeout`.
pub fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v > 0.0 && v <= 86_400.0) {
        return Err(format!("`{s}`: give more than 0 and at most 86400 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

/// The first character of `s` that XML 1.0 cannot carry at all, not even as a character
/// reference (its `Char` production: controls other than tab, newline and carriage return, and
/// U+FFFE/U+FFFF), with its position in characters.
pub fn xml_unrepresentable(s: &str) -> Option<(usize, char)> {
    s.chars().enumerate().find(|&(_, c)| {
        matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}')
    })
}

/// Escapes text for XML character content. A carriage return is written as a character
/// reference, since a parser would turn a literal one into a newline.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\r' => out.push_str("&#13;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The body `wsrm send` writes for one input line.
pub fn payload_for(line: &str) -> String {
    format!("<p xmlns=\"urn:wsrm:payload\">{}</p>", xml_escape(line))
}

/// Default one-way action of `wsrm send`.
pub const ONE_WAY_ACTION: &str = "urn:wsrm:payload/Deliver";
/// Default request-reply action of `wsrm send --request-reply`.
pub const ECHO_ACTION: &str = "urn:wsrm:payload/Echo";

/// An echo service handler that appends every delivery as a JSON line to a shared sink and
/// answers two-way requests with the request body (action + `Response`).
pub struct JsonEcho {
    pub sequence: String,
    pub sink: std::sync::Arc<std::sync::Mutex<Box<dyn std::io::Write + Send>>>,
    pub delivered: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl wsrm::SessionHandler for JsonEcho {
    fn handle(&mut self, d: wsrm::Delivery) -> wsrm::HandlerFuture<'_> {
        let line = serde_json::json!({
            "sequence": self.sequence,
            "number": d.number,
            "action": &*d.action,
            "body": String::from_utf8_lossy(&d.body),
        });
        if let Ok(mut w) = self.sink.lock() {
            let _ = writeln!(w, "{line}");
            let _ = w.flush();
        }
        self.delivered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = if d.expects_reply {
            wsrm::Outcome::Reply {
                action: std::sync::Arc::from(format!("{}Response", d.action)),
                body: d.body.clone(),
            }
        } else {
            wsrm::Outcome::NoReply
        };
        Box::pin(async move { out })
    }
}

use std::io::Write as _;

/// The application table recording the committed length of `wsrm serve --deliver-to FILE`.
pub const DELIVER_FILE_TABLE: &str = "app_deliver_file";
/// The application table recording the committed length of `wsrm send --replies-to FILE`.
pub const REPLY_FILE_TABLE: &str = "app_reply_file";

/// An append-only file written exactly once per entry with a durable (SQLite) store: each
/// line is written at the committed length inside a store transaction that also records the
/// new length, so after a crash the file is cut back to what committed (`serve --deliver-to`,
/// `send --replies-to`).
#[derive(Clone)]
pub struct DurableFile {
    file: std::sync::Arc<std::fs::File>,
    table: &'static str,
}

impl DurableFile {
    /// Opens (creating) the file and cuts it back to the committed length recorded in the
    /// store's `table` (bytes past it belong to entries that never committed).
    pub fn open(
        store: &wsrm::store::Store,
        path: &str,
        table: &'static str,
    ) -> anyhow::Result<Self> {
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY CHECK (id = 1), len INTEGER NOT NULL)"
        );
        let committed = store
            .commit(wsrm::store::Txn::single(wsrm::store::Op::App(Box::new(
                move |tx| {
                    let c = tx.sqlite().ok_or("the store is not SQLite")?;
                    c.execute_batch(&create)?;
                    Ok(())
                },
            ))))
            .wait()
            .and_then(|()| {
                store
                    .as_sqlite()
                    .map(|s| s.query(move |c| committed_len(c, table)).wait())
                    .unwrap_or(Ok(0))
            })?;
        let committed = u64::try_from(committed).unwrap_or(0);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let len = file.metadata()?.len();
        if len < committed {
            anyhow::bail!(
                "the file is {len} bytes but the store says {committed} bytes were written to it; \
                 refusing to continue (was it truncated or replaced?)"
            );
        }
        if len > committed {
            eprintln!(
                "wsrm: {path}: cutting {} uncommitted bytes (entries that will be written again)",
                len - committed
            );
            file.set_len(committed)?;
            file.sync_all()?;
        }
        Ok(DurableFile {
            file: std::sync::Arc::new(file),
            table,
        })
    }

    /// The store write appending `line`: run it inside the transaction that commits the entry.
    pub fn append(
        &self,
        line: Vec<u8>,
    ) -> impl FnOnce(&wsrm::store::AppTx<'_>) -> Result<(), wsrm::store::AppError> + Send + 'static
    {
        let file = self.file.clone();
        let table = self.table;
        move |tx| {
            use std::os::unix::fs::FileExt as _;
            let c = tx.sqlite().ok_or("the store is not SQLite")?;
            let len = committed_len(c, table)?;
            let at = u64::try_from(len).unwrap_or(0);
            file.write_all_at(&line, at)?;
            let new_len = i64::try_from(line.len())
                .unwrap_or(i64::MAX)
                .saturating_add(len);
            c.execute(
                &format!(
                    "INSERT INTO {table} (id, len) VALUES (1, ?1) \
                     ON CONFLICT (id) DO UPDATE SET len = excluded.len"
                ),
                [new_len],
            )?;
            Ok(())
        }
    }
}

/// The committed length recorded in `table` (0 before the first entry).
fn committed_len(
    c: &wsrm::store::rusqlite::Connection,
    table: &str,
) -> Result<i64, wsrm::store::rusqlite::Error> {
    c.query_row(&format!("SELECT len FROM {table} WHERE id = 1"), [], |r| {
        r.get::<_, i64>(0)
    })
    .or_else(|e| match e {
        wsrm::store::rusqlite::Error::QueryReturnedNoRows => Ok(0),
        e => Err(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_cannot_carry_controls_but_tab_newline_and_carriage_return() {
        assert_eq!(xml_unrepresentable("plain text, ünïcode ✓"), None);
        assert_eq!(xml_unrepresentable("tab\there\r\n"), None);
        assert_eq!(xml_unrepresentable("ab\u{1}c"), Some((2, '\u{1}')));
        assert_eq!(xml_unrepresentable("\u{0}"), Some((0, '\u{0}')));
        assert_eq!(xml_unrepresentable("é\u{1F}"), Some((1, '\u{1F}')));
        assert_eq!(xml_unrepresentable("x\u{FFFE}"), Some((1, '\u{FFFE}')));
        assert_eq!(xml_unrepresentable("\u{FFFD}\u{7F}"), None);
    }

    #[test]
    fn escaping_keeps_markup_and_carriage_returns() {
        assert_eq!(
            xml_escape("a<b>&\"c'\rd"),
            "a&lt;b&gt;&amp;&quot;c&apos;&#13;d"
        );
        assert_eq!(
            payload_for("x\ry"),
            "<p xmlns=\"urn:wsrm:payload\">x&#13;y</p>"
        );
    }
}
