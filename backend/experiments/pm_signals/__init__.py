"""bench-pm-signals: the signals a project manager reads (an honest quality estimate with an
interval, a stopping signal, suspect labels), measured on the proxy path's loop against test truth.

Each corpus and seed runs bench-labels' proxy-uncertainty loop (same split, feature cache, cold
start and `next_to_label` order) to `max_labels`, once per audit share (a share of each query
batch's slots drawn uniformly from the unlabeled pool, `engine.quality.audit_picks`) and once with
`noise` of the pool's gold flipped. At the budgets every estimate of `engine.quality` is compared
with the serving head's test accuracy; the stopping signal's history (`engine.stopping`) is replayed
for each rule and threshold against the label count where test accuracy comes within one point of
its last value; the noisy loop's labels are checked with `engine.suspects`. Tuning corpora and
held-out corpora are reported apart.
"""
from backend.experiments.pm_signals.report import summarize, write_outputs
from backend.experiments.pm_signals.runner import LoopRun, PmSignals, PmSignalsConfig

__all__ = ["LoopRun", "PmSignals", "PmSignalsConfig", "summarize", "write_outputs"]
