"""Waiting in tests for a running stack to reach a state (a new version, a dead job): poll, and
fail with the stack's log tail when it does not come."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def poll_until(predicate: Callable[[], T], timeout: float, what: str, log_tail: Callable[[], str],
               interval: float = 0.2) -> T:
    """`predicate()`'s first truthy value within `timeout` s, polled every `interval` s; else the
    test fails saying `what` was not reached, with `log_tail()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"{what} not reached in {timeout:.0f} s\n{log_tail()}")
