"""Build tiny transformer checkpoints on disk, so tests never touch the Hugging Face hub."""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModel,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    PreTrainedTokenizerFast,
)

from tests.helpers.toy_data import corpus_lines

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_wordpiece_tokenizer(lines: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=400, special_tokens=SPECIAL))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
    )


def build_tiny_model(directory: Path, arch: str = "bert", layers: int = 2) -> Path:
    """Save a randomly initialised encoder of width 32 plus its tokenizer to `directory`. Its
    weights come from a fixed seed (the global RNG left as it was), so a test sees the same tiny
    model whichever tests ran before it."""
    tokenizer = build_wordpiece_tokenizer(corpus_lines())
    vocab = len(tokenizer)
    common = dict(vocab_size=vocab, max_position_embeddings=128)
    if arch == "bert":
        config = BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                            intermediate_size=64, **common)
    elif arch == "distilbert":
        config = DistilBertConfig(dim=32, n_layers=layers, n_heads=2, hidden_dim=64, **common)
    elif arch == "electra":
        config = ElectraConfig(embedding_size=32, hidden_size=32, num_hidden_layers=layers,
                               num_attention_heads=2, intermediate_size=64, **common)
    else:
        raise ValueError(arch)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModel.from_config(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
