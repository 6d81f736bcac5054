"""Signals become an exception so `finally` runs; the heartbeat keeps leases alive."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from wms.guards import Heartbeat, Interrupted, signals_held, signals_raise


def test_sigterm_raises_once_then_the_old_handler_is_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    repeats: list[str] = []
    cleaned_up = False
    with pytest.raises(Interrupted, match="interrupted by SIGTERM"), signals_raise(repeats.append):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # a second signal while cleaning up does not break it off
            cleaned_up = True
    assert cleaned_up and repeats == ["SIGINT"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_interrupted_is_not_swallowed_by_except_exception() -> None:
    with pytest.raises(Interrupted), signals_raise():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except Exception:  # what library code often does
            pytest.fail("Interrupted was caught as an ordinary exception")


def test_a_held_signal_lets_the_block_finish_then_raises() -> None:
    done: list[str] = []
    with pytest.raises(Interrupted, match="SIGTERM"), signals_raise():
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the signal is in; the block goes on
            done.append("checkpoint")
            done.append("report")
        done.append("after the block")
    assert done == ["checkpoint", "report"]


def test_a_second_signal_inside_a_held_block_goes_through_at_once() -> None:
    done: list[str] = []
    with pytest.raises(Interrupted, match="SIGINT"), signals_raise(), signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("first held")
        os.kill(os.getpid(), signal.SIGINT)  # asked twice: the user means it
        time.sleep(5)
        done.append("not reached")
    assert done == ["first held"]


def test_outside_the_main_thread_nothing_is_installed() -> None:
    seen: list[object] = []

    def worker() -> None:
        with signals_raise():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [signal.getsignal(signal.SIGTERM)]


def test_heartbeat_beats_until_the_block_ends_and_survives_a_failing_beat() -> None:
    calls: list[int] = []
    errors: list[str] = []
    beaten = threading.Event()

    def beat() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("network down")
        if len(calls) >= 3:
            beaten.set()

    with Heartbeat(0.01, beat, errors.append) as heart:
        assert beaten.wait(5)
    count = len(calls)
    time.sleep(0.05)
    assert len(calls) == count  # stopped with the block
    assert heart.beats == count - 1
    assert errors and "network down" in errors[0]
