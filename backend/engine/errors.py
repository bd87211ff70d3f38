"""Precise exceptions the engine raises, so callers can tell bad input from bugs."""


class ActiveLearningError(Exception):
    """Base class for engine errors."""


class EmptyPoolError(ActiveLearningError):
    """Asked to score or query an unlabeled pool that holds no tasks."""


class NotEnoughLabelsError(ActiveLearningError):
    """Training was asked for with too few labeled examples (or a single class)."""


class DatasetError(ActiveLearningError):
    """A dataset file or name could not be read into examples."""
