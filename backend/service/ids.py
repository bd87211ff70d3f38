"""One strict way to read the ids a request carries (project, task and job ids).

Label Studio ids are positive 64-bit integers. ``str.isdigit()`` also accepts "²" and "٣", and
``int()`` refuses strings past Python's 4,300-digit limit with a bare ``ValueError``, so ids are
matched against ASCII digits (at most 19) and bounded to a signed 64-bit integer here, once.
"""
from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_ID", "as_id", "is_job_id"]

MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
# RQ's own rule for job ids (letters, digits, '_', '-'); longer ids are never ours.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def as_id(value: Any) -> int | None:
    """``value`` as an id (an int, or a string of ASCII digits, in 0..2**63-1), else None.
    Booleans, floats, signs, non-ASCII digits and out-of-range numbers are not ids."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_ID else None
    if isinstance(value, str):
        text = value.strip(" \t")
        if _DIGITS.fullmatch(text):
            number = int(text)
            return number if number <= MAX_ID else None
    return None


def is_job_id(value: str) -> bool:
    """Whether ``value`` can name an RQ job at all (RQ raises ``ValueError`` on anything else)."""
    return bool(_JOB_ID.fullmatch(value))
