//! The `wsrm` command line: serve, send, proxy, demo, decode, simulate. The benchmarks are not
//! subcommands: `bench/run` (wsrm against gSOAP, CXF and plain SOAP) and the runtime's
//! `http_bench` example, both described in BENCHMARKS.md.
//!
//! Exit codes: 0 success; 1 the operation failed (e.g. a message was not acknowledged, a
//! simulation lost a message); 2 bad input or bad usage; 130 `send` interrupted by SIGINT or
//! SIGTERM.

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the runtime allocates per message (envelopes,
/// identifiers, futures), and glibc's malloc took about 15 % of the CPU of a loopback run
/// (BENCHMARKS.md, "wsrm runtime").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Each subcommand lives in its own module with its `Args` and `run`.
// (module declarations)
mod common;
mod decode;
mod demo;
mod proxy;
mod send;
mod serve;
mod simulate;

/// Reliable sessions in the sense of WCF (WS-ReliableMessaging 1.0 and 1.1).
#[derive(Parser)]
#[command(name = "wsrm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    // (subcommands)
    /// Decode one SOAP envelope and print it as JSON (exit 2 on bad input).
    Decode(decode::Args),
    /// Fault-injecting HTTP SOAP intermediary (drop, duplicate, reorder, delay).
    Proxy(proxy::Args),
    /// Host a reliable-session service (one-way + echo) over HTTP or HTTPS.
    Serve(serve::Args),
    /// Send messages in one reliable session and report what happened.
    Send(send::Args),
    /// Service + lossy intermediary + client in one process: exactly-once, in-order delivery.
    Demo(demo::Args),
    /// Seeded simulations of the protocol engine over a lossy virtual link.
    Simulate(simulate::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<u8> = match cli.command {
        // (dispatch)
        Command::Decode(a) => decode::run(a),
        Command::Proxy(a) => proxy::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Send(a) => send::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Simulate(a) => simulate::run(a),
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("wsrm: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
