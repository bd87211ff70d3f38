"""Label Studio <-> engine: label-config schema (`label_config`), tasks/annotations -> examples
(`tasks`, tagging spans in `spans`), model outputs -> Label Studio results (`results`), words and
code-point/UTF-16 offsets (`text`). No Flask, Redis or SDK here. Import from this package, not
from its modules."""
from .label_config import (
    SUPPORTED_PAIRS,
    ControlTag,
    LabelConfig,
    LabelConfigError,
    UnsupportedLabelConfigError,
    parse_label_config,
)
from .results import (
    classification_results,
    decoded_tagging_results,
    gold_tagging_results,
    iob2_spans,
    prediction_entry,
    tagging_results,
)
from .tasks import (
    ConversionReport,
    MissingTextFieldError,
    SkipReason,
    latest_annotation,
    result_choices,
    task_text,
    tasks_to_examples,
    text_to_example,
    unlabeled_examples,
)
from .text import index_to_utf16, sanitize_text, split_words, utf16_to_index

__all__ = [
    "SUPPORTED_PAIRS",
    "ControlTag",
    "ConversionReport",
    "LabelConfig",
    "LabelConfigError",
    "MissingTextFieldError",
    "SkipReason",
    "UnsupportedLabelConfigError",
    "classification_results",
    "decoded_tagging_results",
    "gold_tagging_results",
    "index_to_utf16",
    "iob2_spans",
    "latest_annotation",
    "parse_label_config",
    "prediction_entry",
    "result_choices",
    "sanitize_text",
    "split_words",
    "tagging_results",
    "task_text",
    "tasks_to_examples",
    "text_to_example",
    "unlabeled_examples",
    "utf16_to_index",
]
