//! `wsrm send` against a scripted service that answers as gSOAP 2.8 did in the interop matrix
//! (docs/interop.md). The library's own tests drive the engine through `Client`; these check
//! that the command uses it so that the recovery can happen.

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[path = "../../wsrm/tests/support/gsoap_like.rs"]
mod gsoap_like;

const WSRM: &str = env!("CARGO_BIN_EXE_wsrm");

// gSOAP quirk 19 for the last message, through the command (a CI run of 2026-12-07,
// `wsrm->gsoap rm1.1 one-way proxy`: "1 of 200 messages failed; first: send timed out after
// 60s"). The engine recovers the last message with an early CloseSequence only while the
// session is closing; `wsrm send` used to await every send before closing, so the last one
// timed out after SendTimeout. It now closes right after queueing the last message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_closes_early_enough_to_recover_a_last_message_acked_only_by_close() {
    let last = 5;
    let (url, seen) = gsoap_like::serve(last).await;
    let mut child = tokio::process::Command::new(WSRM)
        .args(["send", &url, "--rm", "1.1"])
        .args(["--count", &last.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wsrm send");
    let (mut out, mut err) = (String::new(), String::new());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    // A guard, not a speed check: without the fix the command fails by itself after
    // SendTimeout (60 s).
    let status = tokio::time::timeout(Duration::from_secs(150), async {
        use tokio::io::AsyncReadExt;
        if let Some(mut o) = stdout {
            let _ = o.read_to_string(&mut out).await;
        }
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut err).await;
        }
        child.wait().await
    })
    .await
    .expect("wsrm send did not finish")
    .expect("wait for wsrm send");
    assert!(status.success(), "{status}\nstdout: {out}\nstderr: {err}");
    assert!(out.contains(&format!("acknowledged {last},")), "{out}");
    assert!(seen.last_copies.load(Ordering::SeqCst) >= 2);
    assert_eq!(seen.closes.load(Ordering::SeqCst), 1);
    assert_eq!(seen.terminates.load(Ordering::SeqCst), 1);
}
