"""Label efficiency: accuracy against the number of labels for the fast path's proxy, the fine-tune
schedules and the default hybrid, side by side on the same corpora, seeds and label sets.

Methods (all on the same pool / test split and random permutation per seed):
- `frozen-lr-random`: the proxy head (logistic regression on frozen mean-pooled features) on the
  first b texts of a seeded random permutation: the baseline.
- `proxy-uncertainty`: the same head; the first `cold_start_labels` labels are the pool's most
  typical texts (k-means, `engine.acquisition.cold_start`), then the head is re-fitted after every
  `query_batch` labels and the least-confident pool texts come next (the fast path's ordering).
- `finetune-old`: `TransformerModel` with the paper's schedule (5 epochs at 2e-5 for
  classification, 15 at 5e-5 for tagging) on random's labels, at the fine-tune budgets only.
- `finetune-fewshot`: `TransformerModel` with `TrainingConfig()` defaults on random's labels.
- `aligned-proxy`: the proxy head on the few-shot fine-tune's own features (aligned features: what
  the fast path re-fits on once that fine-tune wins), read from the same forward passes that score
  the test set and the pool; fitted on the same labels.
- `hybrid` (the default path): proxy-uncertainty's labels; it serves the proxy head, except at a
  fine-tune budget where a measured estimate says a few-shot fine-tune is better. The estimate is
  paired: proxy head and fine-tune are both trained on the same `1 - holdout_share` of the labeled
  rows (stratified, seeded) and scored on the rest; that fine-tune serves only when its hold-out
  accuracy is higher by more than the service's switch margin (`engine.selection`), else the proxy
  head trained on all labels does. A deployment would
  re-train the winner on all labels; on a 2-core CPU that second fine-tune per budget does not fit,
  so hybrid's fine-tune figures are slightly pessimistic. A k-fold estimate of a fine-tune would
  cost k fine-tunes; the proxy head's own CV accuracy is recorded beside the hold-out figures.

Tagging corpora (span F1, strict IOB2) run the same methods on the fast path's token head
(`engine.token_head`, per-word features from `engine.word_features`) instead of the proxy head:
`frozen-lr-random` fits it on random sentences, `proxy-uncertainty` follows the service's order
(`tagging_typical_order`'s first `tagging_cold_start_labels` sentences, then MNLP, through
`order_pool`), and `hybrid` compares the token head's and the few-shot fine-tune's span F1 on the
same held-out sentences (where the fine-tune wins, its figure is the token head re-fitted on all
labels on that fine-tune's word features: what the service serves once they are built);
`aligned-proxy` fits the token head on the few-shot fine-tune's own word features.
Every tagging record carries the words labeled (`detail["tokens"]`), and the report reads the
curves against tokens as well.
Pool/test features (per word for tagging) are encoded once per corpus and cached (float16 `.npz`), and every fine-tune
result is appended to `records.jsonl` in the cache (proxy curves to `curves/`), keyed by everything it
depends on, so a longer run resumes where a shorter one stopped and runs can share the work.
"""
from backend.experiments.label_efficiency.config import (
    ALIGNED,
    FEWSHOT,
    FINETUNED,
    HYBRID,
    METHODS,
    OLD,
    RANDOM,
    UNCERTAINTY,
    Corpus,
    LabelEfficiencyConfig,
    LabelRecord,
    load_corpus,
)
from backend.experiments.label_efficiency.report import summarize, write_outputs
from backend.experiments.label_efficiency.runner import LabelEfficiency, progress_to_stderr

__all__ = ["ALIGNED", "FEWSHOT", "FINETUNED", "HYBRID", "METHODS", "OLD", "RANDOM", "UNCERTAINTY", "Corpus",
           "LabelEfficiency", "LabelEfficiencyConfig", "LabelRecord", "load_corpus", "progress_to_stderr",
           "summarize", "write_outputs"]
