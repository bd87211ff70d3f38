"""The shared training loop, the device helpers, the factory's error on a bad config, and the
distillation teacher loader (no silent change of objective)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from backend.engine.callbacks import Stages
from backend.engine.device import autocast, resolve_device
from backend.engine.errors import Cancelled, StageError
from backend.engine.models.factory import classical_kind
from backend.engine.models.training import (
    LOSS,
    LoopConfig,
    fit_loop,
    optimizer_and_schedule,
    pad_and_mask,
    pad_rows,
    training_batches,
)
from backend.engine.plasm.distill import load_teacher


def test_training_batches_cover_every_example_once_per_epoch():
    lengths = [5, 1, 9, 3, 7, 2, 8]
    for grouped in (True, False):
        batches = training_batches(lengths, 3, torch.Generator().manual_seed(0), grouped)
        assert sorted(i for b in batches for i in b) == list(range(7))
        assert all(1 <= len(b) <= 3 for b in batches)
    again = training_batches(lengths, 3, torch.Generator().manual_seed(0), True)
    assert again == training_batches(lengths, 3, torch.Generator().manual_seed(0), True)  # seeded


def test_pad_and_mask():
    batch = pad_and_mask([[4, 5, 6], [7]], pad_id=0)
    assert batch["input_ids"].tolist() == [[4, 5, 6], [7, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert pad_rows([[True], []], False, dtype=torch.bool).tolist() == [[True], [False]]


def _regression():
    torch.manual_seed(0)
    x = torch.randn(20, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    module = nn.Linear(3, 1)

    def step(rows, generator):
        return {LOSS: nn.functional.mse_loss(module(x[rows]).squeeze(-1), y[rows])}

    return module, step


def test_fit_loop_trains_reports_progress_and_is_seeded():
    module, step = _regression()
    seen = []
    config = LoopConfig(epochs=30, batch_size=5, learning_rate=0.05, seed=1)
    report = fit_loop(module, [1] * 20, step, config, progress=lambda d, t: seen.append((d, t)))
    assert report.steps == 120 and seen[-1] == (120, 120)
    assert report.epoch_losses[LOSS] < 0.5 and not module.training
    module2, step2 = _regression()
    assert fit_loop(module2, [1] * 20, step2, config).last_loss == report.last_loss


def test_the_fused_optimizer_takes_the_unfused_steps():
    """Fused AdamW where this torch has it on the CPU, with the same update as torch's default
    implementation (weight decay off for biases in both)."""
    module, _ = _regression()
    config = LoopConfig(epochs=1, batch_size=5, learning_rate=0.05, weight_decay=0.1)
    optimizer, _ = optimizer_and_schedule(module, config, 10)
    assert optimizer.defaults["fused"] is True  # torch >= 2.4 has the CPU kernel
    for group in optimizer.param_groups:
        group["lr"] = 0.05  # the schedule starts its warm-up at 0
    reference = nn.Linear(3, 1)
    reference.load_state_dict(module.state_dict())
    plain = torch.optim.AdamW([{"params": [reference.weight], "weight_decay": 0.1},
                               {"params": [reference.bias], "weight_decay": 0.0}], lr=0.05)
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        for fused, unfused in ((module.weight, reference.weight), (module.bias, reference.bias)):
            fused.grad = torch.randn(fused.shape, generator=generator)
            unfused.grad = fused.grad.clone()
        optimizer.step()
        plain.step()
    assert torch.allclose(module.weight, reference.weight, atol=1e-6)
    assert torch.allclose(module.bias, reference.bias, atol=1e-6)
    assert not torch.allclose(module.bias, torch.zeros(1))  # the steps moved it


def test_fit_loop_cancels_before_a_step():
    module, step = _regression()
    calls = []
    with pytest.raises(Cancelled):
        fit_loop(module, [1] * 20, step, LoopConfig(epochs=2, batch_size=5, learning_rate=0.1),
                 progress=lambda d, t: calls.append(d), cancel_check=lambda: len(calls) >= 3)
    assert calls == [1, 2, 3]


def test_stages_name_the_failing_stage_and_cancel():
    stages = Stages()
    with pytest.raises(StageError) as err:
        with stages.stage("teacher"):
            raise RuntimeError("boom")
    assert err.value.stage == "teacher" and "boom" in str(err.value)
    with pytest.raises(Cancelled):
        with Stages(cancel_check=lambda: True).stage("split"):
            pass


def test_device_helpers():
    assert resolve_device("cpu").type == "cpu"
    with autocast(torch.device("cpu")):
        assert torch.ones(1).dtype == torch.float32


def test_classical_kind_rejects_an_unreadable_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable model config"):
        classical_kind(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    assert classical_kind(tmp_path) is None


def test_load_teacher_does_not_hide_loading_errors(tmp_path):
    with pytest.raises(OSError):
        load_teacher(str(tmp_path / "missing"))
