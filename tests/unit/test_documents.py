"""The documents mode's way there and back (ner_triton.documents) and the documents of the data readers."""

from __future__ import annotations

import pytest

from ner_triton.data import documents_of, parse_conll
from ner_triton.decoding import Entity
from ner_triton.documents import SEPARATOR, Documents, pieces
from ner_triton.errors import InvalidInputError

DOC = ["Angela Merkel visited Paris .", "She met Émile Zola there .", "", "Berlin"]


def _find(piece_text: str, word: str, entity: str = "PER") -> Entity:
    start = piece_text.index(word)
    return Entity(entity, start, start + len(word), word, 0.9)


def test_pieces_keep_order_and_offsets_and_stay_within_their_bytes() -> None:
    sentences = [f"Sentence number {i} mentions Zoë in Köln ." for i in range(40)]
    out = pieces(sentences, 200)
    assert [s for p in out for s in p.sentences] == sentences
    for p in out:
        assert len(p.text.encode("utf-8")) <= 200
        for sentence, start in zip(p.sentences, p.starts, strict=True):
            assert p.text[start : start + len(sentence)] == sentence
    assert len(out) > 1 and all(len(p.sentences) >= 2 for p in out[:-1]), "pieces are filled, not one per sentence"


def test_a_sentence_over_the_piece_size_goes_alone() -> None:
    long = "word " * 100
    out = pieces(["short one", long, "short two"], 64)
    assert [p.sentences for p in out] == [("short one",), (long,), ("short two",)]
    with pytest.raises(ValueError, match="max_bytes"):
        pieces(["x"], 0)


def test_entities_come_back_per_sentence_with_offsets_into_it() -> None:
    (piece,) = pieces(DOC, 4096)
    assert piece.text == SEPARATOR.join(DOC)
    found = [_find(piece.text, "Angela Merkel"), _find(piece.text, "Émile Zola"), _find(piece.text, "Berlin", "LOC")]
    per_sentence = piece.split(found)
    assert [[(e.entity, e.word) for e in ents] for ents in per_sentence] == [
        [("PER", "Angela Merkel")], [("PER", "Émile Zola")], [], [("LOC", "Berlin")],
    ]  # fmt: skip
    for sentence, ents in zip(DOC, per_sentence, strict=True):
        assert all(sentence[e.start : e.end] == e.word for e in ents)


def test_an_entity_over_a_sentence_boundary_is_cut_at_it() -> None:
    (piece,) = pieces(["He visited New", "York City today"], 4096)
    start = piece.text.index("New")
    end = piece.text.index("City") + len("City")
    first, second = piece.split([Entity("LOC", start, end, piece.text[start:end], 0.8)])
    assert [(e.word, e.start, e.end, e.score) for e in first] == [("New", 11, 14, 0.8)]
    assert [(e.word, e.start, e.end) for e in second] == [("York City", 0, 9)]


def test_documents_send_no_blank_piece_and_map_every_sentence_back() -> None:
    docs = Documents.of([DOC, ["", "  "], ["Only Oslo"]], 4096)
    assert docs.texts == [SEPARATOR.join(DOC), "Only Oslo"], "a document of blank sentences is not sent"
    oslo = Entity("LOC", 5, 9, "Oslo", 0.7)
    back = docs.entities([[], [oslo]])
    assert [len(d) for d in back] == [4, 2, 1]
    assert back[1] == [[], []] and back[2] == [[oslo]]
    with pytest.raises(ValueError, match="3 entity lists for 2 texts"):
        docs.entities([[], [], []])


def test_documents_of_the_wrong_type_are_refused_with_the_fix() -> None:
    with pytest.raises(InvalidInputError, match="list of documents"):
        Documents.of("one string", 4096)
    with pytest.raises(InvalidInputError, match="list of documents"):
        Documents.of(["a sentence", "another"], 4096)
    with pytest.raises(InvalidInputError, match="document 0, sentence 1 is a bytes"):
        Documents.of([["fine", b"raw"]], 4096)  # type: ignore[list-item]


def test_readers_group_sentences_into_their_documents() -> None:
    lines = ["-DOCSTART- -X- O O", "", "A O", "", "B O", "", "-DOCSTART- -X- O O", "", "C O", ""]
    grouped = documents_of(parse_conll(lines))
    assert [[s.tokens for s in doc] for doc in grouped] == [[("A",), ("B",)], [("C",)]]
    plain = documents_of(parse_conll([x for x in lines if not x.startswith("-DOCSTART-")]))
    assert [[s.tokens for s in doc] for doc in plain] == [[("A",)], [("B",)], [("C",)]], "no markers: one each"
