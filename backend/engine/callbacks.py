"""Progress and cancellation, one convention for every long engine call.

A step-level call (`fit`, `predict`, `distill`) takes `progress(done, total)` and, where it can be
cancelled, `cancel_check() -> bool`; a True answer raises `Cancelled` at the next step. A
multi-stage run (PLASM) reports `progress(stage, done, total)` through a `Stages` object, whose
`report` is itself a step-level `Progress` to hand to the calls inside a stage.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from backend.engine.errors import Cancelled, StageError

Progress = Callable[[int, int], None]  # (done, total)
StageProgress = Callable[[str, int, int], None]  # (stage, done, total)
CancelCheck = Callable[[], bool]


def check_cancelled(cancel_check: CancelCheck | None, where: str) -> None:
    """Raise `Cancelled` when the cancel check says so."""
    if cancel_check is not None and cancel_check():
        raise Cancelled(f"cancelled during {where}; nothing was written")


class Stages:
    """Times named stages, reports their progress, honours cancellation (also inside a stage,
    through `report`), and turns a stage's failure into a `StageError` naming it."""

    def __init__(self, progress: StageProgress | None = None, cancel_check: CancelCheck | None = None) -> None:
        self.progress_fn = progress
        self.cancel_check = cancel_check
        self.seconds: dict[str, float] = {}
        self.current = ""

    def check(self) -> None:
        check_cancelled(self.cancel_check, f"stage '{self.current or 'start'}'")

    def report(self, done: int, total: int) -> None:
        """A step-level `Progress` for the work of the current stage."""
        self.check()
        if self.progress_fn is not None:
            self.progress_fn(self.current, done, total)

    @contextmanager
    def stage(self, name: str) -> Iterator[Stages]:
        self.current = name
        self.check()
        self.report(0, 1)
        start = time.perf_counter()
        try:
            yield self
        except (Cancelled, StageError):
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with the stage named
            raise StageError(name, exc) from exc
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        if self.progress_fn is not None:  # no cancel check here: the stage's work is done
            self.progress_fn(name, 1, 1)
