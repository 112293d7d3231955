//! `wsrm decode [FILE|-]`: decode one SOAP envelope and print it as JSON (docs/decode.md).

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use wsrm_wire::{decode, json, Limits};

/// Decode one SOAP envelope (SOAP 1.1/1.2, WS-Addressing 2004/08/1.0, WS-RM 1.0/1.1) and
/// print one JSON object; on bad input print one line naming the problem and the fault it
/// maps to (on stderr) and exit 2.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// File holding the envelope; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Maximum message size in bytes (WCF maxReceivedMessageSize).
    #[arg(long, default_value_t = 65_536)]
    pub max_size: usize,
    /// Pretty-print the JSON.
    #[arg(long)]
    pub pretty: bool,
}

/// Runs the subcommand; returns the exit code.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let limits = Limits {
        max_message_size: args.max_size,
        ..Limits::default()
    };
    // read at most one byte more than the limit: enough to report "too large"
    let cap = (args.max_size as u64).saturating_add(1);
    let mut buf = Vec::new();
    match args.file.as_deref() {
        None => std::io::stdin().take(cap).read_to_end(&mut buf),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().take(cap).read_to_end(&mut buf),
        Some(p) => match std::fs::File::open(p) {
            Ok(f) => {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let r = f.take(cap).read_to_end(&mut buf);
                if len > cap {
                    // report the real size
                    eprintln!(
                        "error: message of {len} bytes exceeds the maximum message size of {} bytes [TooLarge]; fault: none (HTTP 413)",
                        args.max_size
                    );
                    return Ok(2);
                }
                r
            }
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", p.display());
                return Ok(2);
            }
        },
    }
    .context("reading the envelope")?;
    match decode(Bytes::from(buf), &limits) {
        Ok(d) => {
            let v = json::to_json(&d);
            let s = if args.pretty {
                serde_json::to_string_pretty(&v)?
            } else {
                serde_json::to_string(&v)?
            };
            println!("{s}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("{}", json::error_line(&e));
            Ok(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../wsrm-wire/tests/vectors")
            .join(name)
    }

    fn args(file: PathBuf, max_size: usize) -> Args {
        Args {
            file: Some(file),
            max_size,
            pretty: false,
        }
    }

    #[test]
    fn good_input_exits_0_and_bad_input_exits_2() {
        assert_eq!(run(args(vector("w01-3-data.xml"), 65_536)).unwrap(), 0);
        assert_eq!(run(args(vector("bad-truncated.xml"), 65_536)).unwrap(), 2);
        assert_eq!(
            run(args(vector("bad-message-number-rollover-10.xml"), 65_536)).unwrap(),
            2
        );
        // over the size limit
        assert_eq!(run(args(vector("w01-3-data.xml"), 100)).unwrap(), 2);
        // unreadable file
        assert_eq!(run(args(vector("does-not-exist.xml"), 65_536)).unwrap(), 2);
    }
}
