"""Classical successors trained from scratch: a CNN text classifier (Kim, 2014) and a BiLSTM-CRF
tagger (Lample et al., 2016), the paper's non-Transformer successor models.

Both are `transformers.PreTrainedModel`s with their own config classes, so they train through the
same loop as any `AutoModelFor...` checkpoint, save with `save_pretrained` and load back with
`from_pretrained`. `save_pretrained` copies this file beside the weights and writes an `auto_map`
into `config.json`, so an exported successor loads anywhere with

    AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)   # CNN
    AutoModelForTokenClassification.from_pretrained(path, trust_remote_code=True)      # BiLSTM-CRF

(no `trust_remote_code` needed in a process that imported this module and called
`register_auto_classes()`). For that reason this file imports only torch, tokenizers and
transformers: never anything from `backend`.

Tokenization is word level (`build_word_tokenizer`): a vocabulary of the training words, no
special tokens, so for tagging every word is exactly one token and the CRF chain runs over words.
The BiLSTM-CRF returns as `logits` the log of the CRF's posterior tag marginals (forward-backward),
so `softmax(logits)` is each word's tag distribution and its argmax is posterior decoding (in
training mode with labels it returns the emissions instead, to save the backward pass);
`decode()` gives the Viterbi path. Invalid IOB2 transitions (`O -> I-X`, `B-X -> I-Y`) are
forbidden in the CRF when the labels are IOB2 tags.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput, TokenClassifierOutput

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

_init: ModuleType  # the weight-init functions (normal_, zeros_, ...): which module depends on the version
try:  # transformers 5: init functions that skip weights already loaded from a checkpoint
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - transformers 4.x
    _init = nn.init

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
NEG_INF = -1e4


# --------------------------------------------------------------------------------------- configs
class _WordModelConfig(PretrainedConfig):
    """What both classical models share: a word vocabulary, its embeddings, (word) dropout."""

    def __init__(
        self,
        vocab_size: int = 2,
        embedding_dim: int = 128,
        dropout: float = 0.5,
        word_dropout: float = 0.05,
        pad_token_id: int = 0,
        unk_token_id: int = 1,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.word_dropout = word_dropout
        self.unk_token_id = unk_token_id
        # transformers 5 configs are dataclasses whose __init__ takes any extra keyword at run time
        # (special token ids among them), which their static signature does not show
        kwargs["pad_token_id"] = pad_token_id
        super().__init__(**kwargs)


class TextCNNConfig(_WordModelConfig):
    model_type = "plasm-textcnn"

    def __init__(
        self, embedding_dim: int = 128, num_filters: int = 100, kernel_sizes: Sequence[int] = (3, 4, 5),
        **kwargs: Any,
    ) -> None:
        self.num_filters = num_filters
        self.kernel_sizes = list(kernel_sizes)
        super().__init__(embedding_dim=embedding_dim, **kwargs)


class BiLSTMCRFConfig(_WordModelConfig):
    model_type = "plasm-bilstm-crf"

    def __init__(
        self, embedding_dim: int = 100, hidden_size: int = 128, num_lstm_layers: int = 1, **kwargs: Any
    ) -> None:
        self.hidden_size = hidden_size
        self.num_lstm_layers = num_lstm_layers
        super().__init__(embedding_dim=embedding_dim, **kwargs)


# ----------------------------------------------------------------------------------------- base
class _ClassicalPreTrainedModel(PreTrainedModel):
    base_model_prefix = "encoder"
    main_input_name = "input_ids"

    def __init__(self, config: _WordModelConfig) -> None:
        super().__init__(config)
        self.num_labels = _num_labels(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Embedding):
            _init.normal_(module.weight, mean=0.0, std=0.1)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                # a zero [PAD] vector (never updated) = the convolutions' own zero padding, so
                # predictions do not depend on how a batch is padded
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            _init.xavier_uniform_(module.weight)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, nn.LSTM):
            for name, param in module.named_parameters():
                if "weight" in name:
                    _init.xavier_uniform_(param)
                else:
                    _init.zeros_(param)
        elif isinstance(module, CRF):
            for param in (module.transitions, module.start_transitions, module.end_transitions):
                _init.uniform_(param, -0.1, 0.1)

    def _drop_words(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Word dropout: during training replace a few words by [UNK], so [UNK] gets trained."""
        rate = self.config.word_dropout
        if not self.training or rate <= 0:
            return input_ids
        drop = (torch.rand(input_ids.shape, device=input_ids.device) < rate) & attention_mask.bool()
        return input_ids.masked_fill(drop, self.config.unk_token_id)


def _num_labels(config: PretrainedConfig) -> int:
    if config.num_labels is None:
        raise ValueError("a classical model's config needs num_labels (or id2label)")
    return config.num_labels


def _mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_id: int) -> torch.Tensor:
    if attention_mask is None:
        return (input_ids != pad_id).long()
    return attention_mask.long()


# ------------------------------------------------------------------------------------------ CNN
class TextCNNForSequenceClassification(_ClassicalPreTrainedModel):
    """Embeddings -> parallel 1-D convolutions (widths 3, 4, 5) -> max-over-time -> dropout -> linear."""

    config_class = TextCNNConfig

    def __init__(self, config: TextCNNConfig) -> None:
        super().__init__(config)
        self.convs = nn.ModuleList(
            nn.Conv1d(config.embedding_dim, config.num_filters, k, padding=k // 2) for k in config.kernel_sizes
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.num_filters * len(config.kernel_sizes), self.num_labels)
        self.post_init()

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _mask(input_ids, attention_mask, self.config.pad_token_id)
        x = self.embeddings(self._drop_words(input_ids, mask))  # (B, L, E)
        x = x.transpose(1, 2)  # (B, E, L)
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(x))[:, :, : mask.shape[1]]  # (B, F, L): same length for every width
            h = h.masked_fill(~mask.bool()[:, None, :], float("-inf"))
            pooled.append(h.max(dim=2).values)
        out = torch.cat(pooled, dim=1)
        return torch.nan_to_num(out, neginf=0.0)  # empty texts: all-padding rows

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if input_ids.shape[1] == 0:
            input_ids = torch.full((input_ids.shape[0], 1), self.config.pad_token_id, device=input_ids.device)
            attention_mask = torch.zeros_like(input_ids)
        feats = self.features(input_ids, attention_mask)
        logits = self.classifier(self.dropout(feats))
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
            else:
                loss = nn.functional.cross_entropy(logits, labels.view(-1))
        hidden = (feats[:, None, :],) if output_hidden_states else None  # hidden_states[-1][:, 0] = features
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=hidden)


# ------------------------------------------------------------------------------------------ CRF
def iob2_transition_mask(id2label: dict[int, str]) -> tuple[list[list[bool]], list[bool]] | None:
    """(allowed[from][to], allowed_start[to]) for IOB2 tags; None when the labels are not IOB2."""
    names = [id2label[i] for i in range(len(id2label))]
    if not all(n == "O" or (len(n) > 2 and n[:2] in ("B-", "I-")) for n in names):
        return None
    allowed = [[True] * len(names) for _ in names]
    start = [True] * len(names)
    for j, to in enumerate(names):
        if to.startswith("I-"):
            start[j] = False
            for i, frm in enumerate(names):
                allowed[i][j] = frm != "O" and frm[2:] == to[2:]
    return allowed, start


class CRF(nn.Module):
    """Linear-chain CRF over emissions (B, L, T) with a prefix mask (B, L): NLL, marginals, Viterbi."""

    def __init__(self, num_tags: int, constraints: tuple[list[list[bool]], list[bool]] | None = None) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        # Kept as plain lists and turned into penalties at use: `from_pretrained` builds modules on
        # the meta device, where buffers made in __init__ would hold no values.
        self._allowed = constraints[0] if constraints is not None else None
        self._allowed_start = constraints[1] if constraints is not None else None
        self._penalties: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _trans(self) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.transitions.device
        if device not in self._penalties:
            if self._allowed is None:
                pen = torch.zeros(self.num_tags, self.num_tags, device=device)
                start = torch.zeros(self.num_tags, device=device)
            else:
                pen = (~torch.tensor(self._allowed, dtype=torch.bool, device=device)).float() * NEG_INF
                start = (~torch.tensor(self._allowed_start, dtype=torch.bool, device=device)).float() * NEG_INF
            self._penalties[device] = (pen, start)
        pen, start = self._penalties[device]
        return self.transitions + pen, self.start_transitions + start

    def _alphas(self, emissions: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        trans, start = self._trans()
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha[:, :, None] + trans[None], dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], nxt, alpha)
            alphas.append(alpha)
        log_z = torch.logsumexp(alpha + self.end_transitions, dim=1)
        return torch.stack(alphas, dim=1), log_z

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each row's tag path (B,); rows with no tokens give 0."""
        mask = mask.bool()
        tags = tags.masked_fill(~mask, 0)
        trans, start = self._trans()
        rows = torch.arange(emissions.shape[0], device=emissions.device)
        score = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]
        for t in range(1, emissions.shape[1]):
            step = trans[tags[:, t - 1], tags[:, t]] + emissions[rows, t, tags[:, t]]
            score = score + step * mask[:, t]
        last = tags[rows, (mask.sum(1) - 1).clamp(min=0)]
        score = score + self.end_transitions[last]
        _, log_z = self._alphas(emissions, mask)
        return (log_z - score) * mask[:, 0]

    def log_marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """log P(y_t = k | x) for every position (B, L, T) by forward-backward."""
        mask = mask.bool()
        trans, _ = self._trans()
        alphas, log_z = self._alphas(emissions, mask)
        length = emissions.shape[1]
        beta = self.end_transitions.expand(emissions.shape[0], -1)
        steps = [beta]
        for t in range(length - 2, -1, -1):
            nxt = torch.logsumexp(trans[None] + (emissions[:, t + 1] + beta)[:, None, :], dim=2)
            beta = torch.where(mask[:, t + 1, None], nxt, self.end_transitions.expand_as(nxt))
            steps.append(beta)
        betas = torch.stack(steps[::-1], dim=1)
        out = alphas + betas - log_z[:, None, None]
        uniform = float(-torch.log(torch.tensor(float(self.num_tags))))  # log(1/T) where the mask is off
        return torch.where(mask[:, :, None], out, torch.full_like(out, uniform))

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        mask = mask.bool()
        trans, start = self._trans()
        score = start + emissions[:, 0]
        history = []
        for t in range(1, emissions.shape[1]):
            best, idx = (score[:, :, None] + trans[None]).max(dim=1)
            nxt = best + emissions[:, t]
            score = torch.where(mask[:, t, None], nxt, score)
            history.append(idx)
        score = score + self.end_transitions
        paths: list[list[int]] = []
        lengths = mask.sum(1).tolist()
        for row, n in enumerate(lengths):
            if n == 0:
                paths.append([])
                continue
            tag = int(score[row].argmax())
            path = [tag]
            for t in range(n - 1, 0, -1):
                tag = int(history[t - 1][row, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths


# ------------------------------------------------------------------------------------ BiLSTM-CRF
class BiLSTMCRFForTokenClassification(_ClassicalPreTrainedModel):
    """Word embeddings -> BiLSTM -> linear emissions -> CRF. One token per word (word tokenizer)."""

    config_class = BiLSTMCRFConfig

    def __init__(self, config: BiLSTMCRFConfig) -> None:
        super().__init__(config)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embedding_dim, config.hidden_size, num_layers=config.num_lstm_layers, batch_first=True,
            bidirectional=True, dropout=config.dropout if config.num_lstm_layers > 1 else 0.0,
        )
        self.classifier = nn.Linear(2 * config.hidden_size, self.num_labels)
        id2label = {int(k): v for k, v in (config.id2label or {}).items()}
        self.crf = CRF(self.num_labels, iob2_transition_mask(id2label))
        self.post_init()

    def emissions(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dropout(self.embeddings(self._drop_words(input_ids, mask)))
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        return self.classifier(self.dropout(out)), out

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TokenClassifierOutput:
        batch, length = input_ids.shape
        if length == 0:
            empty = torch.zeros(batch, 0, self.num_labels, device=input_ids.device)
            loss = empty.sum() if labels is not None else None
            hidden_states = (empty,) if output_hidden_states else None
            return TokenClassifierOutput(loss=loss, logits=empty, hidden_states=hidden_states)
        mask = _mask(input_ids, attention_mask, self.config.pad_token_id)
        emissions, hidden = self.emissions(input_ids, mask)
        loss = None
        if labels is not None:
            label_mask = mask.bool() & (labels != -100)
            loss = self.crf.nll(emissions, labels.clamp(min=0), label_mask).sum() / batch
        if self.training and labels is not None:
            logits = emissions  # training only needs the loss: skip forward-backward
        else:
            logits = self.crf.log_marginals(emissions, mask)
        hidden_states = (hidden,) if output_hidden_states else None
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=hidden_states)

    @torch.no_grad()
    def decode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[list[int]]:
        """Viterbi tag ids per row (only the unpadded positions)."""
        mask = _mask(input_ids, attention_mask, self.config.pad_token_id)
        emissions, _ = self.emissions(input_ids, mask)
        return self.crf.viterbi(emissions, mask)


# ------------------------------------------------------------------------------------ tokenizer
def build_word_tokenizer(
    corpus: Iterable[str] | Iterable[Sequence[str]],
    *,
    split_words: bool,
    lowercase: bool,
    max_vocab: int = 50000,
    min_freq: int = 1,
    max_length: int = 256,
) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over a training corpus, with no special tokens.

    `split_words=True`: texts are split on whitespace and punctuation (classification);
    `split_words=False`: the corpus holds word lists and each word stays one token (tagging), so
    `word_ids()` maps every token to its own word.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    norm = [normalizers.NFC()] + ([normalizers.Lowercase()] if lowercase else [])
    pre = pre_tokenizers.BertPreTokenizer() if split_words else pre_tokenizers.WhitespaceSplit()
    probe = Tokenizer(models.WordLevel({UNK_TOKEN: 0}, unk_token=UNK_TOKEN))
    probe.normalizer = normalizers.Sequence(norm)
    probe.pre_tokenizer = pre
    counts: Counter[str] = Counter()
    for item in corpus:
        pieces = [item] if isinstance(item, str) else list(item)
        for piece in pieces:
            piece = probe.normalizer.normalize_str(piece)
            counts.update(w for w, _ in probe.pre_tokenizer.pre_tokenize_str(piece))
    vocab = {PAD_TOKEN: 0, UNK_TOKEN: 1}
    for word, freq in counts.most_common():
        if len(vocab) >= max_vocab or freq < min_freq:
            break
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Sequence(norm)
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=UNK_TOKEN, pad_token=PAD_TOKEN, model_max_length=max_length,
    )


# ---------------------------------------------------------------------------------- registration
TextCNNConfig.register_for_auto_class()
TextCNNForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
BiLSTMCRFConfig.register_for_auto_class()
BiLSTMCRFForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")


def register_auto_classes() -> None:
    """Make the Auto classes resolve the classical model types in this process (idempotent)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    AutoConfig.register(TextCNNConfig.model_type, TextCNNConfig, exist_ok=True)
    AutoConfig.register(BiLSTMCRFConfig.model_type, BiLSTMCRFConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(TextCNNConfig, TextCNNForSequenceClassification, exist_ok=True)
    AutoModelForTokenClassification.register(BiLSTMCRFConfig, BiLSTMCRFForTokenClassification, exist_ok=True)
