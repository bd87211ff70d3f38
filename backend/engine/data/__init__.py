"""Labeled corpora for simulations and benchmarks: local files, packaged offline corpora, HF hub sets.

The public face of `backend.engine.data`; import from here. Modules: `dataset` (Dataset,
load_dataset, train_test_split), `formats` (file readers), `corpora` (packaged corpora), `hub`
(Hugging Face), `iob` (tag schemes), `rows` (what readers return), `pool` (unlabeled pool files).
"""
from backend.engine.data.corpora import PACKAGED_DATASETS
from backend.engine.data.dataset import Dataset, load_dataset, train_test_split
from backend.engine.data.iob import to_iob2
from backend.engine.data.pool import read_unlabeled_pool
from backend.engine.data.rows import DropReason

__all__ = [
    "PACKAGED_DATASETS", "Dataset", "DropReason", "load_dataset", "read_unlabeled_pool", "to_iob2", "train_test_split",
]
