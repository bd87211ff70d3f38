"""Words and character offsets of a task's text, shared by both conversion directions.

Character offsets
-----------------
Label Studio's ``<Text>`` span results (``value.start`` / ``value.end``) count **Unicode code
points**, i.e. Python ``str`` indices, not JavaScript UTF-16 code units: an emoji such as "🐱"
advances the offset by 1, not 2. Sources: the frontend fix "Store code points instead of js
length" (HumanSignal/label-studio PR #1559, merged via label-studio-frontend PR #308, 2022, after
issues #1008 and #1347 reported UTF-16 offsets in 2021) and the frontend's end-to-end test
``web/libs/editor/tests/integration/e2e/ner/emoji.cy.ts`` ("Should calculate offsets by code points
in text"): on ``"🐱 Warning: This is a test text"`` selecting "test" must serialize
``start=21, end=25`` (UTF-16 would give 22, 26), with the text-rendering feature flag on or off.
So offsets are used as Python indices, and predicted spans are sent as Python indices with
``text == task_text[start:end]``.

Annotations made with 2021-era releases may still hold UTF-16 offsets. When a span's own
``value.text`` does not match the code-point slice but does match the UTF-16 slice, the span is
converted (with a warning, see `backend.labeling.tasks`); otherwise offsets are trusted, because
``value.text`` is not always a verbatim copy of the task text (Label Studio escapes newlines in it,
for one).
"""
from __future__ import annotations

import regex

__all__ = ["split_words", "has_astral", "index_to_utf16", "utf16_to_index", "sanitize_text"]

# CJK scripts are written without spaces: one character per token (as BERT's tokenizer does), so
# a span inside a sentence does not tag the whole sentence.
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
_WORD_RE = regex.compile(
    r"[" + _CJK + r"]\p{M}*"  # one CJK character (with any combining marks)
    r"|(?:(?![" + _CJK + r"])[\p{L}\p{N}\p{M}_])+"  # a run of letters/digits/marks ("café", "हिन्दी")
    r"|(?=[^\s\p{Cf}])\X"  # any other visible grapheme: punctuation, a whole emoji ZWJ sequence
)
_ASTRAL = regex.compile(r"[\U00010000-\U0010FFFF]")
_SURROGATE = regex.compile(r"[\ud800-\udfff]")


def sanitize_text(text: str) -> str:
    """``text`` with every lone surrogate (JSON allows ``"\\ud800"``) replaced by U+FFFD: such a
    string cannot be encoded as UTF-8, so tokenizers and Redis would fail on it. One character
    becomes one character, so code-point offsets stay valid."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Split text into (word, start, end) with code-point offsets; punctuation and emoji are their
    own tokens, combining marks stay with their letter, whitespace and zero-width format
    characters are dropped."""
    return [(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def has_astral(text: str) -> bool:
    """Whether the text holds a character outside the BMP: only then can UTF-16 offsets differ."""
    return _ASTRAL.search(text) is not None


# UTF-16 helpers (legacy annotations; clients that count like JavaScript)


def index_to_utf16(text: str, index: int) -> int:
    """Python index -> JavaScript (UTF-16 code unit) offset."""
    return index + sum(1 for ch in text[:index] if ord(ch) > 0xFFFF)


def utf16_to_index(text: str, offset: int) -> int:
    """JavaScript (UTF-16 code unit) offset -> Python index; an offset inside a surrogate pair
    rounds up to the next character."""
    units = 0
    for i, ch in enumerate(text):
        if units >= offset:
            return i
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(text)
