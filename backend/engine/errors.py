"""Precise exceptions the engine raises, so callers can tell bad input from bugs."""


class ActiveLearningError(Exception):
    """Base class for engine errors."""


class EmptyPoolError(ActiveLearningError):
    """Asked to score or query an unlabeled pool that holds no tasks."""


class NotEnoughLabelsError(ActiveLearningError):
    """Training was asked for with too few labeled examples (or a single class)."""


class DatasetError(ActiveLearningError):
    """A dataset file or name could not be read into examples."""


class Cancelled(ActiveLearningError):
    """A long run (training, distillation, PLASM) stopped because its cancel check said so;
    nothing was written."""


class StageError(ActiveLearningError):
    """A stage of a multi-stage run (PLASM) failed; `stage` names it and the cause is chained."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"PLASM stage '{stage}' failed: {type(cause).__name__}: {cause}")
        self.stage = stage
