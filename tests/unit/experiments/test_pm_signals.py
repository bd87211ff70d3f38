"""`feasible-al bench-pm-signals` end to end on toy corpora and a tiny model: every estimate,
the stopping rules and the suspects, tuning and held-out corpora apart; and its loop is
bench-labels' proxy-uncertainty loop when no task is an audit."""
import json

import numpy as np
import pytest

from backend.cli import main
from backend.engine.quality import AUDIT, AUDIT_RECENT, PROXY_CV
from backend.experiments.label_efficiency import UNCERTAINTY, LabelEfficiency, LabelEfficiencyConfig
from backend.experiments.pm_signals import PmSignals, PmSignalsConfig
from tests.helpers.toy_data import write_toy_csv

COMMON = ["--pool-size", "120", "--test-size", "40", "--seeds", "0", "--max-labels", "40",
          "--budgets", "20", "40", "--suspect-budgets", "20", "40", "--device", "cpu"]


@pytest.fixture
def corpora(tmp_path):
    return write_toy_csv(tmp_path / "toy.csv", 200), write_toy_csv(tmp_path / "other.csv", 200, seed=1)


def test_every_signal_is_measured_and_held_out_corpora_reported_apart(tmp_path, tiny_bert, corpora, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["bench-pm-signals", "--corpora", str(corpora[0]), "--heldout-corpora", str(corpora[1]),
            "--model", str(tiny_bert), "--audit-shares", "0", "0.2", *COMMON, "--cache-dir", str(cache),
            "--output-dir", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "tuning corpora: toy" in table and "held-out corpora: other" in table
    payload = json.loads((out / "pm_signals.json").read_text())
    assert (out / "pm_signals.png").stat().st_size > 0
    summary = payload["summary"]
    assert set(summary["groups"]) == {"tuning", "held-out"}
    for group in summary["groups"].values():
        estimates = group["estimates"]["0.2"]  # measured where audits ran
        for method in (AUDIT, AUDIT_RECENT, PROXY_CV):
            rows = estimates[method]["budgets"]
            assert rows and {r["labeled"] for r in rows} <= {20, 40}
            assert all(0 <= r["coverage"] <= 1 and r["mae"] >= 0 for r in rows)
        assert estimates[PROXY_CV]["pooled"] is None  # pooled from 100 labels on: none here
        assert {"0.0", "0.2"} <= set(group["efficiency"][group["corpora"][0]][0])
        assert set(group["stopping"]) == {"kappa", "changed", "uncertainty"}
        assert set(group["suspects"]) == {"20", "40"}
        assert {r["corpus"] for r in group["suspects"]["40"]} == {"all", *group["corpora"]}
    # thresholds are chosen on the tuning corpora only
    assert set(summary["chosen_thresholds"]) == {"kappa", "changed", "uncertainty"}
    runs = payload["runs"]
    assert len(runs) == 2 * 3  # per corpus: share 0, share 0.2, the noisy loop
    noisy = [r for r in runs if r["noisy"]]
    assert all(r["suspects"]["40"]["flipped"] >= 1 for r in noisy)
    assert all(len(r["curve"]) == 4 and r["curve"][-1][0] == 40 for r in runs)
    # a second run reads every loop back from the cache
    assert main(argv) == 0
    assert json.loads((out / "pm_signals.json").read_text())["runs"] == runs


def test_without_audits_the_loop_is_bench_labels_proxy_uncertainty(tmp_path, tiny_bert, corpora):
    cache = str(tmp_path / "cache")
    labels = LabelEfficiency(LabelEfficiencyConfig(
        corpora=(str(corpora[0]),), model=str(tiny_bert), pool_size=120, test_size=40, seeds=(0,),
        budgets=(10, 20, 30, 40), finetune_budgets=(20,), methods=(UNCERTAINTY,), device="cpu", cache_dir=cache))
    expected = {r.labeled: r.metrics["main"] for r in labels.run() if r.method == UNCERTAINTY}
    signals = PmSignals(PmSignalsConfig(
        corpora=(str(corpora[0]),), heldout_corpora=(), model=str(tiny_bert), pool_size=120, test_size=40,
        seeds=(0,), max_labels=40, audit_shares=(0.0,), noise=0.0, budgets=(20, 40), device="cpu", cache_dir=cache))
    (run,) = signals.run()
    assert dict(run.curve) == pytest.approx(expected)


def test_the_noisy_loop_flips_the_share_it_says_to_another_class(tmp_path, tiny_bert, corpora):
    signals = PmSignals(PmSignalsConfig(corpora=(str(corpora[0]),), heldout_corpora=(), model=str(tiny_bert),
                                        pool_size=120, test_size=40, device="cpu", cache_dir=""))
    data = signals.prepare(str(corpora[0]), heldout=False)
    noisy = data.noisy(seed=0, share=0.05)
    assert int((noisy != data.gold).sum()) == 6 and np.isin(noisy, [0, 1]).all()
