"""Label Studio <-> engine: label-config schema, tasks/annotations -> examples, model outputs ->
Label Studio results (code-point character offsets for spans). No Flask, Redis or SDK here."""
from .convert import (
    ConversionReport,
    MissingTextFieldError,
    classification_results,
    index_to_utf16,
    iob2_spans,
    latest_annotation,
    prediction_entry,
    split_words,
    tagging_results,
    task_text,
    tasks_to_examples,
    unlabeled_examples,
    utf16_to_index,
)
from .label_config import (
    SUPPORTED_PAIRS,
    LabelConfig,
    LabelConfigError,
    UnsupportedLabelConfigError,
    parse_label_config,
)

__all__ = [
    "SUPPORTED_PAIRS",
    "ConversionReport",
    "LabelConfig",
    "LabelConfigError",
    "MissingTextFieldError",
    "UnsupportedLabelConfigError",
    "classification_results",
    "index_to_utf16",
    "iob2_spans",
    "latest_annotation",
    "parse_label_config",
    "prediction_entry",
    "split_words",
    "tagging_results",
    "task_text",
    "tasks_to_examples",
    "unlabeled_examples",
    "utf16_to_index",
]
