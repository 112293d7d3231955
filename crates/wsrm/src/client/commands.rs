//! The channel from a session's [`super::Client`] handles to its driver task.
//!
//! A queue under a lock, which the driver takes whole when it looks: a send costs one
//! uncontended lock and a push, and a wake only when the queue was empty (the driver takes
//! everything queued behind the first command in the same look). Tokio's unbounded channel,
//! which this replaces, paid a semaphore update, a slot in its block list and a waker
//! notification per command on the sending side and as much again per command on the driver's
//! side (~0.5 k instructions per send in the HTTP benchmark).
//!
//! Like that channel: the driver sees the channel closed once every sender is gone and the
//! queue is empty, and a send fails once the driver's receiver is gone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::Cmd;

struct Shared {
    state: Mutex<State>,
    /// The driver's waker, registered before each look at an empty queue.
    waker: AtomicWaker,
}

struct State {
    queue: VecDeque<Cmd>,
    /// Live senders (clones of [`CmdTx`]).
    senders: usize,
    /// The receiver is gone: sends fail.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only this module's short critical sections run under the lock; none panics.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A new channel.
pub(crate) fn channel() -> (CmdTx, CmdRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            closed: false,
        }),
        waker: AtomicWaker::new(),
    });
    (
        CmdTx {
            shared: shared.clone(),
        },
        CmdRx {
            shared,
            taken: VecDeque::new(),
        },
    )
}

/// The sending side, held by every [`super::Client`] handle.
pub(crate) struct CmdTx {
    shared: Arc<Shared>,
}

impl CmdTx {
    /// Queues `c` for the driver; gives it back when the driver is gone.
    pub(crate) fn send(&self, c: Cmd) -> Result<(), Cmd> {
        let was_empty = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(c);
            }
            let was_empty = st.queue.is_empty();
            st.queue.push_back(c);
            was_empty
        };
        // Behind a non-empty queue the driver was woken already, and takes this command with
        // the ones before it.
        if was_empty {
            self.shared.waker.wake();
        }
        Ok(())
    }
}

impl Clone for CmdTx {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        CmdTx {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for CmdTx {
    fn drop(&mut self) {
        let last = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.shared.waker.wake();
        }
    }
}

/// The driver's side.
pub(crate) struct CmdRx {
    shared: Arc<Shared>,
    /// Commands taken from the queue and not handed out yet.
    taken: VecDeque<Cmd>,
}

impl CmdRx {
    /// The next command; `Ready(None)` once every sender is gone and nothing is queued.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Cmd>> {
        if let Some(c) = self.taken.pop_front() {
            return Poll::Ready(Some(c));
        }
        // Registered before the look, so a command queued after the look wakes the driver.
        self.shared.waker.register(cx.waker());
        let open = self.take();
        match self.taken.pop_front() {
            Some(c) => Poll::Ready(Some(c)),
            None if !open => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    /// [`CmdRx::poll_recv`] as a future.
    pub(crate) async fn recv(&mut self) -> Option<Cmd> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next command if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Cmd> {
        if self.taken.is_empty() {
            self.take();
        }
        self.taken.pop_front()
    }

    /// Closes the channel (later sends fail) and returns the commands not handed out yet.
    pub(crate) fn close(&mut self) -> Vec<Cmd> {
        let queued = {
            let mut st = self.shared.lock();
            st.closed = true;
            std::mem::take(&mut st.queue)
        };
        self.taken.drain(..).chain(queued).collect()
    }

    /// Moves everything queued into `taken` (which is empty); false when every sender is gone.
    fn take(&mut self) -> bool {
        let mut st = self.shared.lock();
        std::mem::swap(&mut st.queue, &mut self.taken);
        st.senders > 0
    }
}

impl Drop for CmdRx {
    fn drop(&mut self) {
        let queued = {
            let mut st = self.shared.lock();
            st.closed = true;
            std::mem::take(&mut st.queue)
        };
        // Dropped outside the lock: a command's drop fails its caller's call (its oneshot).
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker;

    fn abort() -> Cmd {
        Cmd::Abort
    }

    #[test]
    fn commands_come_out_in_order_and_the_channel_closes_with_its_last_sender() {
        let (tx, mut rx) = channel();
        let tx2 = tx.clone();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        for _ in 0..3 {
            assert!(tx.send(abort()).is_ok());
        }
        assert!(tx2.send(abort()).is_ok());
        let mut n = 0;
        while let Poll::Ready(Some(_)) = rx.poll_recv(&mut cx) {
            n += 1;
        }
        assert_eq!(n, 4);
        drop(tx);
        assert!(rx.poll_recv(&mut cx).is_pending(), "one sender is left");
        assert!(tx2.send(abort()).is_ok());
        drop(tx2);
        assert!(
            matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(_))),
            "queued before the close"
        );
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn a_send_fails_once_the_receiver_is_gone() {
        let (tx, rx) = channel();
        assert!(tx.send(abort()).is_ok());
        drop(rx);
        assert!(tx.send(abort()).is_err());
    }

    /// The driver is woken by the first command queued after it looked at an empty queue, and
    /// by the last sender leaving.
    #[tokio::test]
    async fn the_driver_is_woken_by_a_send_and_by_the_last_sender_leaving() {
        let (tx, mut rx) = channel();
        let driver = tokio::spawn(async move {
            let mut n = 0;
            while rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
            assert!(tx.send(abort()).is_ok());
        }
        let tx2 = tx.clone();
        drop(tx);
        tokio::task::yield_now().await;
        drop(tx2);
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), driver)
            .await
            .expect("the driver was not woken")
            .expect("driver task");
        assert_eq!(n, 100);
    }
}
