"""`feasible-al bench-backend`'s configuration: typed, with its defaults and help on the fields.

The command's flags are generated from these dataclasses (`backend.cli.args`, as `bench-labels`
does with `LabelEfficiencyConfig`). Three modes share the first block, `BackendBenchConfig`:

- ``iterations`` (default, `backend.harness.backend_bench`): ``/webhook`` and ``/predict`` latency
  and one full + one UPS iteration split into fetch / train / inference / push seconds;
- ``fast-latency`` (`backend.harness.fast_latency`, `FastLatencyConfig`): annotation -> Label
  Studio serving a new fast version;
- ``label-efficiency`` (`backend.harness.service_loop`, `ServiceLoopConfig`): the service loop
  annotated from ``/next`` with gold labels, its serving model's accuracy on bench-labels' test
  split at each label budget.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("iterations", "fast-latency", "label-efficiency")
DEPLOYMENT_NAMES = ("readme", "single")  # backend.harness.processes.DEPLOYMENTS
DEFAULT_MODEL = "all-MiniLM-L6-v2"  # packaged: offline, CPU
DEFAULT_DATASET = "rotten_tomatoes"
ITERATIONS_POOL, LOOP_POOL = 2000, 3000  # LOOP_POOL: bench-labels' default pool (LabelEfficiencyConfig)


@dataclass
class FastLatencyConfig:
    """``--mode fast-latency``: annotation submitted -> Label Studio serves a new fast version."""

    pool_sizes: tuple[int, ...] = field(default=(1000, 10000), metadata={
        "help": "tasks per project measured (texts repeat beyond the corpus)"})
    annotations: int = field(default=12, metadata={"help": "measured annotations per project"})
    held_pool: int = field(default=10000, metadata={
        "help": "the pool size on which --fast-updates and --full-iterations run before LS's predictions are counted"})
    fast_updates: int = field(default=30, metadata={"help": "fast updates on the held pool before counting"})
    full_iterations: int = field(default=3, metadata={"help": "full iterations on the held pool before counting"})
    concurrent_training: bool = field(default=True, metadata={
        "help": "keep a full fine-tune running during the measured annotations (--no-concurrent-training: do not)"})
    think_s: float = field(default=3.0, metadata={
        "help": "seconds between /next serving a task and its annotation (the annotator reading it)"})
    fast_worker_queues: tuple[str, ...] = field(default=("fast", "scoring"), metadata={
        "help": "queues of the second worker (the first serves all)"})
    fast_top_k: int = field(default=0, metadata={"help": "FAST_TOP_K for the run (0: the default)"})
    compute_pool: int = field(default=100_000, metadata={
        "help": "synthetic 384-d float16 pool for the compute-alone measurement (0: skip)"})
    compute_labeled: int = field(default=200, metadata={"help": "labels of the compute-alone measurement"})
    max_texts: int = field(default=12_000, metadata={"help": "distinct corpus texts used at most"})
    features_timeout: float = field(default=1800.0, metadata={
        "help": "seconds allowed for the pool features / the full iterations"})


@dataclass
class ServiceLoopConfig:
    """``--mode label-efficiency``: the service loop as annotators drive it, measured like bench-labels."""

    corpus: tuple[str, ...] = field(default=(DEFAULT_DATASET,), metadata={
        "help": "packaged classification corpora (or files), split into pool / test exactly as bench-labels does"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={
        "help": "the backend's SEED per run (0 is its default)"})
    budgets: tuple[int, ...] = field(default=(50, 100, 150), metadata={
        "help": "label counts at which the serving model is measured on the test split"})
    workers: tuple[str, ...] = field(default=("readme",), metadata={
        "help": "deployments, one run each: readme = a worker on every queue + one on the fast queue alone "
                "(the README's quick start); single = one worker on every queue"})
    test_size: int = field(default=1000, metadata={"help": "held-out test texts (bench-labels' default)"})
    update_timeout: float = field(default=15.0, metadata={
        "help": "seconds the annotator waits for the fast update of each annotation before taking the next "
                "task anyway (counted as a miss)"})
    predict_batch: int = field(default=250, metadata={"help": "test texts per /predict call"})
    compare: str | None = field(default=None, metadata={
        "help": "a bench-labels label_efficiency.json: its curves are drawn beside the loop's"})

    def __post_init__(self) -> None:
        if not self.corpus or not self.seeds or not self.budgets or not self.workers:
            raise ValueError("give at least one corpus, seed, budget and deployment")
        if min(self.budgets) < 1 or self.test_size < 1 or self.predict_batch < 1:
            raise ValueError("budgets, --test-size and --predict-batch must be >= 1")
        unknown = set(self.workers) - set(DEPLOYMENT_NAMES)
        if unknown:
            raise ValueError(f"unknown deployments {sorted(unknown)}; choose from {DEPLOYMENT_NAMES}")


@dataclass
class BackendBenchConfig:
    """What every mode shares, and the iterations mode (the default)."""

    mode: str = field(default="iterations", metadata={"help": "what to measure", "choices": MODES})
    fast_latency: bool = field(default=False, metadata={"help": "same as --mode fast-latency"})
    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "ACQUISITION_MODEL: packaged name, hub name or local checkpoint directory"})
    dataset: str = field(default=DEFAULT_DATASET, metadata={
        "help": "packaged classification corpus or local path (iterations, fast-latency)"})
    device: str = field(default="auto", metadata={"help": "DEVICE for the backend: auto | cpu | cuda[:n]"})
    torch_threads: int = field(default=0, metadata={"help": "TORCH_THREADS for the backend (0 = torch default)"})
    epochs: int | None = field(default=None, metadata={"help": "EPOCHS (default: the backend's)"})
    full_rescore_iterations: str | None = field(default=None, metadata={
        "help": "FULL_RESCORE_ITERATIONS (default: '1' for iterations and fast-latency, so iteration 2 is a "
                "UPS one; the backend's own for label-efficiency)"})
    output_dir: str | None = field(default=None, metadata={
        "help": "default: runs/bench-backend; docs/benchmarks/fast-latency; docs/benchmarks/service-loop"})
    pool_size: int | None = field(default=None, metadata={
        "help": f"tasks in the project (default {ITERATIONS_POOL}; label-efficiency: {LOOP_POOL}, bench-labels')"})
    labeled: int = field(default=40, metadata={"help": "annotated tasks before training (iterations)"})
    webhook_events: int = field(default=200, metadata={"help": "/webhook calls timed (iterations)"})
    predict_tasks: int = field(default=1000, metadata={"help": "cached tasks per /predict (iterations)"})
    predict_repeats: int = field(default=5, metadata={"help": "/predict calls timed (iterations)"})
    fast: FastLatencyConfig = field(default_factory=FastLatencyConfig)
    loop: ServiceLoopConfig = field(default_factory=ServiceLoopConfig)

    def __post_init__(self) -> None:
        if self.fast_latency:
            if self.mode not in ("iterations", "fast-latency"):
                raise ValueError(f"--fast-latency contradicts --mode {self.mode}")
            self.mode = "fast-latency"
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {MODES}")

    @property
    def pool(self) -> int:
        """Tasks in the project: the flag, else the mode's default."""
        if self.pool_size:
            return self.pool_size
        return LOOP_POOL if self.mode == "label-efficiency" else ITERATIONS_POOL

    @property
    def rescore(self) -> str:
        """FULL_RESCORE_ITERATIONS of the iterations and fast-latency modes."""
        return self.full_rescore_iterations or "1"
