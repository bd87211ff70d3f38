"""Process-level settings for torch and transformers: which device to run on, bf16 autocast on
CUDA, and quiet library logging. Used by the models, distillation, the CLI, the web process and
the workers alike."""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TypeVar

import torch

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def quiet_transformers() -> None:
    """Silence per-load reports and progress bars, which drown a CLI's own progress output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present, otherwise the named device ('cpu', 'cuda:1', ...)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_device(module: ModuleT, device: torch.device) -> ModuleT:
    """`module.to(device)`: moves it in place and returns it. Called through torch's typed
    `Module.to`, since transformers wraps `PreTrainedModel.to` in `functools.wraps`, which type
    checkers read as a plain function taking the model as its first argument."""
    module.to(device)
    return module


def autocast(device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast on CUDA (float32 master weights stay); a no-op on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
