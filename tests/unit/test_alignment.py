from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ner_triton.alignment import (
    CASING_CLASSES,
    casing_id,
    encode_texts,
    pad_batch,
    subtoken_labels,
    word_tags_to_token_tags,
)
from ner_triton.data import parse_conll
from ner_triton.labels import LabelMap
from ner_triton.modeling import load_tokenizer
from ner_triton.schema import IGNORE_INDEX


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return load_tokenizer(str(tiny_model_dir))


@pytest.mark.parametrize(
    ("piece", "cls"),
    [
        ("", "special"),
        ("word", "lower"),
        ("Word", "title"),
        ("EU", "upper"),
        ("McD", "mixed"),
        ("1996", "digit"),
        (".", "other"),
        ("A", "title"),
        ("É", "title"),
        ("ÉU", "upper"),
        ("élan", "lower"),
    ],
)
def test_casing_classes(piece: str, cls: str) -> None:
    assert CASING_CLASSES[casing_id(piece)] == cls


def test_first_subtoken_labels_and_split_tokens(tokenizer: Any) -> None:
    (s,) = parse_conll(["The DT I-NP O", "U.S. NNP I-NP I-LOC", "Blackburnshire NNP I-NP I-PER"])
    labels = LabelMap.from_tags(s.tags)
    (enc,) = encode_texts(tokenizer, [s.text], 64)
    rows = subtoken_labels(enc, s.token_starts(), s.tags, labels)
    tags = [labels.labels[i] if i != IGNORE_INDEX else None for i in rows]
    pieces = [s.text[a:b] for a, b in enc.offsets]
    # [CLS] the u . s . blackburn ##shire [SEP]: U.S. is 4 pre-tokenizer words, B- then I-.
    assert list(zip(pieces, tags, strict=True))[1:6] == [
        ("The", "O"), ("U", "B-LOC"), (".", "I-LOC"), ("S", "I-LOC"), (".", "I-LOC"),
    ]  # fmt: skip
    assert tags[0] is None and tags[-1] is None  # special tokens
    assert tags[6] == "B-PER" and tags[7:-1] == [None] * (len(tags) - 8)  # later sub-tokens ignored
    assert enc.casing_ids[1:3] == [casing_id("The"), casing_id("U")] and enc.casing_ids[0] == 0
    # gold tags as predictions give back the gold token tags
    assert word_tags_to_token_tags(enc, [t or "O" for t in tags], s.token_starts()) == list(s.tags)


def test_pad_batch_shapes(tokenizer: Any) -> None:
    encs = encode_texts(tokenizer, ["a b c d e", "hi"], 64)
    batch = pad_batch(encs)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["casing_ids"].shape == (2, 7)
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0]


words = st.text(alphabet=st.characters(categories=["Lu", "Ll", "Nd", "Po"]), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(words, st.sampled_from(["O", "I-PER", "I-LOC", "B-LOC"])), min_size=1, max_size=12))
def test_gold_tags_survive_alignment(tokenizer: Any, rows: list[tuple[str, str]]) -> None:
    """Any gold tagging, written as first-sub-token labels and read back, gives the same token tags."""
    (s,) = parse_conll([f"{w} X X {t}" for w, t in rows])
    labels = LabelMap.from_tags(["B-PER", "B-LOC"])
    (enc,) = encode_texts(tokenizer, [s.text], 512)
    ids = subtoken_labels(enc, s.token_starts(), s.tags, labels)
    pred = [labels.labels[i] if i != IGNORE_INDEX else "O" for i in ids]
    got = word_tags_to_token_tags(enc, pred, s.token_starts())
    # Tokens that the tokenizer drops entirely (no sub-token) read back as O.
    kept = {enc.offsets[p][0] for p in enc.first_subtokens()}
    expected = [t if start in kept else "O" for t, start in zip(s.tags, s.token_starts(), strict=True)]
    assert got == expected
