"""Text <-> sub-tokens: the one place that decides which sub-token speaks for which word.

A *word* is what the tokenizer's pre-tokenizer produces (for BERT: split on whitespace and
punctuation), identified by the fast tokenizer's ``word_ids``. Only the **first sub-token of each
word** carries a label in training and a prediction at inference; later sub-tokens are ignored.
The same rule is used by fine-tuning, evaluation, the Triton postprocess step and the client.

Every sub-token also gets a *casing id* computed from its surface text in the original string:
uncased checkpoints lower-case their input, and casing is the strongest cue for names.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ner_triton.errors import ModelLoadError
from ner_triton.labels import LabelMap
from ner_triton.schema import ATTENTION_MASK, CASING_IDS, IGNORE_INDEX, INPUT_IDS

# Casing classes of a sub-token's surface text. 0 is reserved for special and pad tokens.
CASING_CLASSES = ("special", "lower", "title", "upper", "mixed", "digit", "other")
NUM_CASING = len(CASING_CLASSES)


@functools.lru_cache(maxsize=1 << 16)
def casing_id(piece: str) -> int:
    """Casing class of one sub-token's surface text (see :data:`CASING_CLASSES`); cached: the same pieces come
    back in every text (a bounded cache, pure function of the string)."""
    if not piece:
        return 0
    if any(c.isdigit() for c in piece):
        return 5
    letters = [c for c in piece if c.isalpha()]
    if not letters:
        return 6
    if all(c.islower() for c in letters):
        return 1
    if letters[0].isupper() and all(c.islower() for c in letters[1:]):
        return 2
    if all(c.isupper() for c in letters):
        return 3
    return 4


@dataclass(frozen=True)
class Encoding:
    """One text, tokenized: ids, casing, character offsets and word ids per sub-token."""

    input_ids: list[int]
    casing_ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]

    def __len__(self) -> int:
        return len(self.input_ids)

    def first_subtokens(self) -> list[int]:
        """Positions of the first sub-token of every word, in order."""
        out, prev = [], None
        for i, w in enumerate(self.word_ids):
            if w is not None and w != prev:
                out.append(i)
            prev = w if w is not None else prev
        return out


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[Encoding]:
    """Tokenize raw texts with a fast tokenizer (special tokens added, truncated to ``max_length``)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("a fast (Rust) tokenizer is needed for offsets and word ids")
    batch = tokenizer(
        list(texts),
        return_offsets_mapping=True,
        truncation=True,
        max_length=max_length,
        add_special_tokens=True,
    )
    out = []
    for i, text in enumerate(texts):
        offsets = [tuple(o) for o in batch["offset_mapping"][i]]
        word_ids = batch.word_ids(i)
        casing = [0 if w is None else casing_id(text[s:e]) for (s, e), w in zip(offsets, word_ids, strict=True)]
        out.append(Encoding(list(batch["input_ids"][i]), casing, offsets, word_ids))  # type: ignore[arg-type]
    return out


def encode_in_context(
    tokenizer: Any, texts: Sequence[str], lefts: Sequence[str], rights: Sequence[str], max_length: int, context: int
) -> list[Encoding]:
    """Like :func:`encode_texts`, each text between up to ``context`` sub-tokens of its ``lefts`` / ``rights``
    text (document context, FLERT): ``[CLS] left[-l:] text right[:r] [SEP]`` within ``max_length``.

    The text itself is truncated first (as :func:`encode_texts` does); the room left is shared between the two
    sides (each gets what the other does not need). Context sub-tokens carry their casing but no word id and a
    ``(0, 0)`` offset, so they are never labelled, predicted or scored: offsets stay those of ``texts``.
    ``context=0`` or empty neighbours give exactly :func:`encode_texts`."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("a fast (Rust) tokenizer is needed for offsets and word ids")
    own = tokenizer(list(texts), return_offsets_mapping=True, truncation=True, max_length=max_length - 2,
                    add_special_tokens=False)  # fmt: skip
    sides = [
        tokenizer(list(side), return_offsets_mapping=True, add_special_tokens=False, truncation=False)
        if context and any(side) else None
        for side in (lefts, rights)
    ]  # fmt: skip
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    out = []
    for i, text in enumerate(texts):
        ids, offsets, word_ids = own["input_ids"][i], [tuple(o) for o in own["offset_mapping"][i]], own.word_ids(i)
        room = max(0, max_length - 2 - len(ids))
        want = [0 if side is None else min(context, len(side["input_ids"][i])) for side in sides]
        left = min(want[0], max(room - want[1], room // 2))
        right = min(want[1], room - left)
        pieces: list[tuple[list[int], list[int]]] = []  # (ids, casing) of the left and the right context
        for side, source, k, first in ((sides[0], lefts[i], left, False), (sides[1], rights[i], right, True)):
            if side is None or k == 0:
                pieces.append(([], []))
                continue
            cut = slice(0, k) if first else slice(len(side["input_ids"][i]) - k, None)
            pieces.append((list(side["input_ids"][i][cut]),
                           [casing_id(source[a:b]) for a, b in side["offset_mapping"][i][cut]]))  # fmt: skip
        (lids, lcase), (rids, rcase) = pieces
        casing = [casing_id(text[a:b]) for a, b in offsets]
        out.append(
            Encoding(
                [cls, *lids, *ids, *rids, sep],
                [0, *lcase, *casing, *rcase, 0],
                [(0, 0)] * (1 + len(lids)) + offsets + [(0, 0)] * (len(rids) + 1),
                [None] * (1 + len(lids)) + list(word_ids) + [None] * (len(rids) + 1),
            )
        )
    return out


def covered_chars(encoding: Encoding) -> int:
    """How many characters of its text ``encoding`` holds (the end of its last word's sub-token): less than the
    text's length when it was truncated."""
    return max((b for (_, b), w in zip(encoding.offsets, encoding.word_ids, strict=True) if w is not None), default=0)


def subtoken_labels(
    encoding: Encoding, token_starts: Sequence[int], tags: Sequence[str], labels: LabelMap
) -> list[int]:
    """Training labels: the first sub-token of each word gets its tag, every other position -100.

    ``token_starts``/``tags`` describe the gold tokens (e.g. CoNLL tokens) of the text. A gold
    token that the pre-tokenizer splits into several words (``U.S.`` -> ``u . s .``) gives its
    tag to the first word and the matching ``I-`` tag to the others.
    """
    ids = labels.label2id
    out = [IGNORE_INDEX] * len(encoding)
    for pos in encoding.first_subtokens():
        start = encoding.offsets[pos][0]
        t = bisect.bisect_right(token_starts, start) - 1
        tag = tags[t]
        if start != token_starts[t] and tag != "O":
            tag = "I-" + tag[2:]
        out[pos] = ids[tag]
    return out


def word_tags_to_token_tags(encoding: Encoding, subtoken_tags: Sequence[str], token_starts: Sequence[int]) -> list[str]:
    """Tags of gold tokens from per-sub-token predicted tags: each token takes the tag of the
    first sub-token that starts exactly where the token starts; tokens with none get ``O``."""
    by_start: dict[int, str] = {}
    for pos in encoding.first_subtokens():
        by_start.setdefault(encoding.offsets[pos][0], subtoken_tags[pos])
    return [by_start.get(s, "O") for s in token_starts]


def pad_batch(encodings: Sequence[Encoding], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Pad a batch to its longest member: int64 ``input_ids``, ``attention_mask``, ``casing_ids``."""
    n = max(len(e) for e in encodings)
    ids = np.full((len(encodings), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), n), dtype=np.int64)
    casing = np.zeros((len(encodings), n), dtype=np.int64)
    for i, e in enumerate(encodings):
        ids[i, : len(e)] = e.input_ids
        mask[i, : len(e)] = 1
        casing[i, : len(e)] = e.casing_ids
    return {INPUT_IDS: ids, ATTENTION_MASK: mask, CASING_IDS: casing}


@dataclass(frozen=True)
class Window:
    """One model input cut from a long text: ``[CLS] tokens[start:end] [SEP]``.

    ``owned`` marks the positions (in this window, special tokens included) whose predictions
    this window contributes; every content token is owned by exactly one window, the one in which
    it sits farthest from an edge, so each prediction has context on both sides.
    """

    encoding: Encoding
    owned: list[bool]


class PlainEncoding(NamedTuple):
    """Sub-tokens of a whole text without special tokens: ids, character offsets, word ids."""

    input_ids: list[int]
    offsets: list[tuple[int, int]]
    word_ids: list[int | None]


def encode_plain(tokenizer: Any, text: str) -> PlainEncoding:
    """``text`` tokenized without special tokens or truncation, by the runtime's
    :class:`~ner_triton.runtime.tokenizer.TokenizerFile` (``encode_plain``) or a transformers fast tokenizer."""
    if hasattr(tokenizer, "encode_plain"):
        return tokenizer.encode_plain(text)  # type: ignore[no-any-return]
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False, truncation=False)
    return PlainEncoding(list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]], enc.word_ids())


def window_starts(n: int, max_length: int, stride: int) -> list[int]:
    """Where the windows of a text of ``n`` sub-tokens start (:func:`encode_windows`); each holds
    ``min(max_length - 2, n)`` of them plus two special tokens."""
    width = max_length - 2
    if width < 2 or not 0 <= stride < width:
        raise ValueError(f"need max_length > 3 and 0 <= stride < max_length - 2, got {max_length}, {stride}")
    return [0] if n <= width else [*range(0, n - width, width - stride), n - width]


def encode_windows(
    tokenizer: Any, text: str, max_length: int, stride: int, plain: PlainEncoding | None = None
) -> list[Window]:
    """Tokenize ``text`` without truncation and cut it into overlapping windows of ``max_length``.

    Consecutive windows overlap by ``stride`` content tokens. A text that fits gives one window
    identical to :func:`encode_texts` with the same ``max_length``. ``tokenizer`` is either kind
    :func:`encode_plain` takes; it also gives ``cls_token_id`` and ``sep_token_id``. ``plain``: the text's
    :func:`encode_plain`, when the caller already has it.
    """
    ids, offsets, word_ids = plain if plain is not None else encode_plain(tokenizer, text)
    n, width = len(ids), max_length - 2
    starts = window_starts(n, max_length, stride)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    windows = []
    for k, a in enumerate(starts):
        b = min(a + width, n)
        lo = 0 if k == 0 else (a + starts[k - 1] + width) // 2  # midpoint of the overlap with the previous
        hi = n if k == len(starts) - 1 else (starts[k + 1] + b) // 2
        span_offsets = offsets[a:b]
        casing = [casing_id(text[s:e]) for s, e in span_offsets]
        encoding = Encoding(
            [cls, *ids[a:b], sep],
            [0, *casing, 0],
            [(0, 0), *span_offsets, (0, 0)],
            [None, *word_ids[a:b], None],
        )
        owned = [False, *[lo <= p < hi for p in range(a, b)], False]
        windows.append(Window(encoding, owned))
    return windows


def load_tokenizer(model: str) -> Any:
    """The fast tokenizer of ``model``; a clear error when there is none."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model, use_fast=True)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        raise ModelLoadError(
            f"cannot load a tokenizer from MODEL={model!r}: {exc}. Set MODEL to a local directory "
            "with tokenizer files or a hub id (needs network)."
        ) from exc
    if not tok.is_fast:
        raise ModelLoadError(f"MODEL={model!r} has no fast tokenizer (tokenizer.json); offsets need one.")
    return tok
