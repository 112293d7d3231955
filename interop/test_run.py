"""Unit tests of the matrix runner's parsers (`python3 -m unittest discover -s interop`).

The runner recognises a peer's known limitation from what `wsrm send` prints when it gives up.
These tests pin the texts it reads to the ones wsrm prints (the Rust side pins them too:
`wsrm-proto`'s `the_retry_errors_keep_the_texts_the_interop_runner_reads`), so a changed error
message fails here and not, by chance, in the one matrix cell that loses a reply.
"""
import importlib.machinery
import importlib.util
import os
import unittest

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run")
_LOADER = importlib.machinery.SourceFileLoader("interop_run", _PATH)
_SPEC = importlib.util.spec_from_loader("interop_run", _LOADER)
run = importlib.util.module_from_spec(_SPEC)
_LOADER.exec_module(run)


class FailedMessage(unittest.TestCase):
    def test_retry_exhausted(self):
        err = ("wsrm: error: 3 of 9 messages failed; first: input 7: session faulted: maximum "
               "retry count exceeded for message 7; its last transmission failed: HTTP 202")
        n, how = run.failed_message(err)
        self.assertEqual(n, "7")
        self.assertEqual(how, "wsrm exhausted MaxRetryCount")

    def test_acknowledged_request_without_reply(self):
        # The stderr of the CI run that failed on session 20's head (cell 27, seed 5).
        err = ("WARN wsrm::client: session failed error=request 158 was acknowledged but no reply "
               "came after the maximum retry count (is the service's operation one-way, or did it "
               "lose the reply and keep no copy to resend?) unacknowledged=32 | wsrm: error: 43 of "
               "200 messages failed; first: input 158: session faulted: request 158 was "
               "acknowledged but no reply came after the maximum retry count (is the service's "
               "operation one-way, or did it lose the reply and keep no copy to resend?)")
        n, how = run.failed_message(err)
        self.assertEqual(n, "158")
        self.assertIn("MaxRetryCount", how)
        self.assertIn("reply never came", how)

    def test_send_timeout(self):
        n, how = run.failed_message("wsrm: error: 1 of 200 messages failed; first: input 200: "
                                    "send timed out")
        self.assertEqual(n, "200")
        self.assertIn("SendTimeout", how)

    def test_request_timeout(self):
        n, _ = run.failed_message("first: input 12: request timed out")
        self.assertEqual(n, "12")

    def test_other_failures_name_no_message(self):
        self.assertEqual(run.failed_message("wsrm: error: connection refused"), (None, None))


if __name__ == "__main__":
    unittest.main()
