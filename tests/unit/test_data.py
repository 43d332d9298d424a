from __future__ import annotations

from pathlib import Path

import pytest

from ner_triton.data import entity_counts, iob1_to_iob2, load_split, parse_conll, read_conll
from ner_triton.errors import DataError


def test_iob1_to_iob2_starts_every_entity_with_b() -> None:
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == [
        "B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG",
    ]  # fmt: skip


def test_parse_skips_docstart_and_converts(conll_dir: Path) -> None:
    sentences = read_conll(conll_dir / "test.txt")
    assert len(sentences) == 8  # 4 sentences per document, 2 documents
    first = sentences[0]
    assert first.tokens[:3] == ("ACME", "rejects", "Danish")
    assert first.tags[:3] == ("B-ORG", "O", "B-MISC")
    last = sentences[3]
    assert last.tags[1:5] == ("B-LOC", "O", "B-LOC", "B-LOC")  # U.K. / Peru / Chile (B- in IOB1)
    assert entity_counts(sentences) == {"LOC": 10, "MISC": 4, "ORG": 4, "PER": 2}


def test_text_and_token_starts_agree() -> None:
    (s,) = parse_conll(["Maria NNP I-NP I-PER", "Lindqvist NNP I-NP I-PER"])
    assert s.text == "Maria Lindqvist"
    assert [s.text[a:].split(" ")[0] for a in s.token_starts()] == list(s.tokens)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["ACME NNP I-ORG"], "<lines>:1: expected 4"),
        (["ACME NNP I-NP I-ORG", "", "x y z X-PER"], "<lines>:3: unknown NER tag 'X-PER'"),
        (["ACME NNP I-NP I-"], "unknown NER tag"),
        ([], "no sentences found"),
        (["-DOCSTART- -X- O O", ""], "no sentences found"),
    ],
)
def test_bad_lines_name_source_and_line(lines: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_conll(lines)


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_conll(tmp_path / "nope.txt")
    (tmp_path / "train.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match="not UTF-8"):
        read_conll(tmp_path / "train.txt")
    with pytest.raises(DataError, match="no valid file"):
        load_split(tmp_path, "valid")
    with pytest.raises(DataError, match="is not a directory"):
        load_split(tmp_path / "missing", "train")


def test_original_file_names_are_found(tmp_path: Path, conll_dir: Path) -> None:
    (tmp_path / "eng.testa").write_text((conll_dir / "valid.txt").read_text())
    assert len(load_split(tmp_path, "valid")) == 8
