"""Process-level settings for torch and transformers: which device to run on, bf16 autocast on
CUDA, the CPU's fastest product for float16 features, and quiet library logging. Used by the
models, distillation, the CLI, the web process and the workers alike."""
from __future__ import annotations

import functools
import time
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


# float16 rows x weight: the dtypes the product may run in (float16 rows are cast for the others)
HALF_PRODUCT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
PROBE_ROWS = 1 << 14
# rows cast and multiplied at a time: a few thousand stay in cache between the cast and the product.
# 2M words x 384 into 13 tags in bfloat16, 1 thread, AMD EPYC (Zen 4): 1.34 s in 131k-row chunks,
# 0.64 s in 4k; the tagging fast path's full re-score of 100k sentences 1.56-1.73 s -> 0.97-1.00 s
HALF_PRODUCT_CHUNK = 1 << 12


@functools.cache
def fastest_half_product(dim: int, outputs: int, threads: int) -> torch.dtype:
    """The dtype in which (rows, dim) float16 features times a (dim, outputs) weight run fastest
    on this CPU, casts included, `HALF_PRODUCT_CHUNK` rows at a time, timed once per process
    (about 0.1 s). CPUs differ by 4x here: with AVX512-FP16/AMX float16 is fastest; an AMD EPYC
    without float16 arithmetic took 8 s for 2M words x 384 in float16, 2.7-3.3 s in float32 and
    2.1 s in bfloat16 (131k-row chunks).
    `threads` is part of the key because the ranking can change with it."""
    del threads  # the key only: torch runs at the threads set when called
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(PROBE_ROWS, dim, generator=generator).to(torch.float16)
    best, best_seconds = torch.float16, float("inf")
    with torch.inference_mode():
        for dtype in HALF_PRODUCT_DTYPES:
            weight = torch.randn(dim, outputs, generator=generator).to(dtype)
            half_product(rows, weight)  # the first call of a kernel sets it up (tens of ms)
            seconds = min(_time_product(rows, weight) for _ in range(5))
            if seconds < best_seconds:
                best, best_seconds = dtype, seconds
    return best


def half_product(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """float32 (rows @ weight) for float16 `rows`, in `weight`'s dtype (see `fastest_half_product`)."""
    if rows.dtype != weight.dtype:
        rows = rows.to(weight.dtype)
    return torch.mm(rows, weight).float()


def _time_product(rows: torch.Tensor, weight: torch.Tensor) -> float:
    start = time.perf_counter()
    for first in range(0, len(rows), HALF_PRODUCT_CHUNK):
        half_product(rows[first : first + HALF_PRODUCT_CHUNK], weight)
    return time.perf_counter() - start
