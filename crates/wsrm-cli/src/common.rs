//! Helpers shared by the runtime subcommands (serve, send, proxy, demo): logging set-up,
//! the tokio runtime, signals, usage errors.

use std::future::Future;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed (not every message acknowledged, session faulted, ...).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad input or bad usage.
pub const EXIT_USAGE: u8 = 2;

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
