"""The committer thread: one call at a time, in order, on a daemon thread that never holds up exit."""

from __future__ import annotations

import threading

import pytest

from worker.checkpoint.committer import Committer


def test_calls_run_in_order_and_hand_back_results_and_errors():
    committer = Committer()
    order: list[int] = []
    futures = [committer.submit(lambda n=n: order.append(n) or n) for n in range(5)]
    assert [f.result(timeout=5) for f in futures] == list(range(5))
    assert order == list(range(5))
    failing = committer.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
    assert committer.submit(lambda a, b: a + b, 2, 3).result(timeout=5) == 5
    committer.shutdown()


def test_a_blocked_call_is_left_behind_on_a_daemon_thread():
    release = threading.Event()
    blocked = Committer()
    stuck = blocked.submit(release.wait)
    assert blocked._thread.daemon  # the interpreter does not wait for it at exit
    blocked.shutdown()  # returns at once although its call never finishes
    replacement = Committer()
    assert replacement.submit(lambda: "next").result(timeout=5) == "next"
    assert not stuck.done()
    release.set()
    assert stuck.result(timeout=5) is True
    replacement.shutdown()
