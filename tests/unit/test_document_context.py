"""Document context (issue 23): documents from the readers, sentences encoded between their neighbours, labels
and scores on the sentence alone, and data without documents read exactly as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ner_triton.alignment import covered_chars, encode_in_context, encode_texts, subtoken_labels
from ner_triton.data import Sentence, parse_conll, with_document_context
from ner_triton.labels import LabelMap
from ner_triton.modeling import load_tokenizer
from ner_triton.pipeline.evaluate import encode_sentences
from ner_triton.schema import IGNORE_INDEX
from ner_triton.settings import BuildSettings

LINES = """-DOCSTART- O

Alpha B-ORG
said O

Beta B-PER
left O

-DOCSTART- O

Gamma B-LOC
""".splitlines()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return load_tokenizer(str(tiny_model_dir))


def test_docstart_gives_each_sentence_its_neighbours_in_its_document_only() -> None:
    a, b, c = parse_conll(LINES)
    assert (a.left, a.right) == ((), ("Beta", "left"))
    assert (b.left, b.right) == (("Alpha", "said"), ())
    assert (c.left, c.right) == ((), ()), "a sentence alone in its document has no context"


def test_without_document_markers_there_is_no_context() -> None:
    sentences = parse_conll([line for line in LINES if not line.startswith("-DOCSTART-")])
    assert len(sentences) == 3 and all(not s.left and not s.right for s in sentences)


def test_context_keeps_the_nearest_words_up_to_the_limit() -> None:
    doc = [Sentence((f"w{i}a", f"w{i}b"), ("O", "O")) for i in range(5)]
    middle = with_document_context([doc], words=3)[2]
    assert middle.left == ("w0b", "w1a", "w1b") and middle.right == ("w3a", "w3b", "w4a")
    assert with_document_context([doc], words=0)[2].left == ()
    assert middle == doc[2], "context is not part of a sentence's identity"


def test_no_context_is_exactly_the_sentence_encoding(tokenizer: Any) -> None:
    texts = ["Alpha said", "Beta left"]
    plain = encode_texts(tokenizer, texts, 16)
    assert encode_in_context(tokenizer, texts, ["x y", "z"], ["u", "v w"], 16, 0) == plain
    assert encode_in_context(tokenizer, texts, ["", ""], ["", ""], 16, 8) == plain


def test_context_surrounds_the_sentence_and_is_never_labelled(tokenizer: Any) -> None:
    (enc,) = encode_in_context(tokenizer, ["Beta left"], ["Alpha said so"], ["Gamma came"], 32, 2)
    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids)
    assert tokens == ["[CLS]", "said", "so", "beta", "left", "gamma", "came", "[SEP]"]
    assert enc.word_ids == [None, None, None, 0, 1, None, None, None]
    assert enc.offsets[3:5] == [(0, 4), (5, 9)], "offsets stay those of the sentence's own text"
    assert enc.casing_ids[1:3] == [1, 1] and enc.casing_ids[5] == 2, "context keeps its casing"
    labels = LabelMap(("O", "B-PER", "I-PER"))
    rows = subtoken_labels(enc, [0, 5], ["B-PER", "O"], labels)
    assert rows == [IGNORE_INDEX] * 3 + [1, 0] + [IGNORE_INDEX] * 3
    assert covered_chars(enc) == len("Beta left")


@pytest.mark.parametrize(
    ("left", "right", "max_length", "expect"),
    [
        ("a b c d e f", "g h i j k l", 8, (2, 2)),  # 4 of room: shared
        ("a", "g h i j k l", 8, (1, 3)),  # what the left side does not need goes right
        ("a b c d e f", "", 8, (3, 0)),  # never more than `context`, even with room to spare
        ("a b c d e f", "g h i j k l", 64, (3, 3)),  # at most `context` each side
    ],
)
def test_the_room_left_is_shared_between_the_sides(
    tokenizer: Any, left: str, right: str, max_length: int, expect: tuple[int, int]
) -> None:
    (enc,) = encode_in_context(tokenizer, ["Beta left"], [left], [right], max_length, 3)
    first = enc.word_ids.index(0)
    assert len(enc) <= max_length
    assert (first - 1, len(enc) - first - 2 - 1) == expect


def test_a_long_sentence_is_truncated_as_alone_and_gets_no_context(tokenizer: Any) -> None:
    text = " ".join(["word"] * 40)
    (enc,) = encode_in_context(tokenizer, [text], ["left side"], ["right side"], 16, 8)
    assert enc == encode_texts(tokenizer, [text], 16)[0]
    assert covered_chars(enc) < len(text)


def test_evaluation_encodes_documents_only_in_the_document_mode(tokenizer: Any) -> None:
    sentences = parse_conll(LINES)
    alone = encode_sentences(tokenizer, sentences, 32, 0)
    assert alone == encode_texts(tokenizer, [s.text for s in sentences], 32)
    in_docs = encode_sentences(tokenizer, sentences, 32, 8)
    assert len(in_docs[0]) > len(alone[0]) and in_docs[2] == alone[2]


def test_context_setting_from_the_environment() -> None:
    assert BuildSettings.from_env({"CONTEXT": "64"}).train.context_tokens == 64
    assert BuildSettings.from_env({}).train.context_tokens == 0
    with pytest.raises(Exception, match=r"CONTEXT=999 must be in \[0, max_length=128\]"):
        BuildSettings.from_env({"CONTEXT": "999"})
