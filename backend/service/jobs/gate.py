"""Whether the fast path runs for a project now, and which feature set it works on: read by the
webhook (to queue an update), the update itself (before it publishes) and the full iteration (to
keep a fine-tune's features). Pure reads: no jobs are queued here."""
from __future__ import annotations

from dataclasses import dataclass, replace

from backend.engine.types import TaskType
from backend.service.features import base_key, word_key
from backend.service.records import ProjectState
from backend.service.runtime import JobContext


@dataclass(frozen=True)
class FeatureTarget:
    """A feature set to build: its key, the encoder that writes it, and the fine-tuned version it
    belongs to ("" for the pretrained encoder's)."""

    key: str
    source: str
    version: str = ""


def fast_path_blocker(ctx: JobContext, state: ProjectState | None) -> str | None:
    """Why this project gets no fast update now, or None."""
    if not ctx.settings.fast_enabled:
        return "FAST_PATH=off: only full iterations change the order"
    if state is None:
        return "unknown project"
    if not ctx.settings.label_studio_configured:
        return "the fast path needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (it pushes to Label Studio)"
    if state.finetune_won and not state.feature_source_version:
        measured = ("its span F1 measured better than the token head's" if state.task_type is TaskType.TAGGING
                    else "it measured better than the proxy head")
        return f"the fine-tuned model serves ({measured}); the fast path resumes on its features once they are complete"
    return None


def without_win(state: ProjectState) -> ProjectState:
    """The state as a full iteration sees it: it re-decides who serves, whoever served before."""
    return replace(state, finetune_won=False)


def aligned_features_wanted(ctx: JobContext, state: ProjectState | None) -> bool:
    """Whether a fine-tune's own pool features are wanted (its scoring chunks keep a classifier's;
    a tagger's are built from its checkpoint once it wins): whenever the fast path could run,
    whichever model serves now."""
    return state is not None and fast_path_blocker(ctx, without_win(state)) is None


def base_feature_target(ctx: JobContext, task_type: TaskType | None = None) -> FeatureTarget:
    """The pretrained encoder's features (FEATURE_MODEL): a vector per text, or per word for tagging
    (a project whose task type is not known yet counts as classification)."""
    source = ctx.settings.feature_encoder
    return FeatureTarget(word_key(source) if task_type is TaskType.TAGGING else base_key(source), source)


def current_feature_target(ctx: JobContext, state: ProjectState | None) -> FeatureTarget:
    """The set the fast path uses now, or the pretrained encoder's when it has none yet."""
    if state is not None and state.feature_key:
        return FeatureTarget(state.feature_key, state.feature_source, state.feature_source_version)
    return base_feature_target(ctx, state.task_type if state is not None else None)


def features_note(state: ProjectState) -> str:
    """Whose features the proxy head works on, in words (shown with the serving decision)."""
    if state.feature_source_version and state.task_type is TaskType.TAGGING:
        return (f"the token head works on the word features of {state.feature_source_version}, the fine-tune that "
                "won the serving choice, and six word-shape bits")
    if state.feature_source_version:
        return (f"the head works on the features of {state.feature_source_version}, the fine-tune that won the "
                "serving choice (its CV accuracy on them is optimistic: that encoder was trained on these labels)")
    if state.task_type is TaskType.TAGGING:
        return (f"the token head works on the pretrained encoder's word features ({state.feature_source}) and six "
                "word-shape bits")
    return f"the head works on the pretrained encoder's features ({state.feature_source})"
