from __future__ import annotations

from pathlib import Path

import pytest

from ner_triton.data import (
    DataSource,
    detect_scheme,
    entity_counts,
    iob1_to_iob2,
    load_split,
    parse_conll,
    read_conll,
)
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
        (["ACME"], "<lines>:1: expected a token and its tag"),
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


# One small invented corpus, written in every format and scheme the readers take. Types have hyphens and
# non-ASCII tokens; sentence 1 has adjacent entities of one type, sentence 2 single-token entities.
CORPUS = [
    [("Zoë", "person"), ("Kowalczyk", "person"), ("flew", None), ("to", None), ("São", "geo-loc"),
     ("Paulo", "geo-loc"), ("on", None), ("2024-03-14", "DATE-TIME")],
    [("Oslo", "geo-loc"), ("Bergen", "geo-loc"), ("and", None), ("Tromsø", "geo-loc")],
    [("ACME", "company"), ("sells", None), ("Widget", "creative-work"), ("Pro", "creative-work"), ("!", None)],
]  # fmt: skip
# Entities as (sentence, first token, last token, type): Oslo and Bergen are two entities.
SPANS = [(0, 0, 1, "person"), (0, 4, 5, "geo-loc"), (0, 7, 7, "DATE-TIME"), (1, 0, 0, "geo-loc"),
         (1, 1, 1, "geo-loc"), (1, 3, 3, "geo-loc"), (2, 0, 0, "company"), (2, 2, 3, "creative-work")]  # fmt: skip


def _tags(scheme: str) -> list[list[str]]:
    out = [["O"] * len(s) for s in CORPUS]
    for k, a, b, t in SPANS:
        for i in range(a, b + 1):
            first, last = i == a, i == b
            prev_same = a > 0 and any(kk == k and bb == a - 1 and tt == t for kk, _, bb, tt in SPANS)
            if scheme == "iob2":
                p = "B" if first else "I"
            elif scheme == "iob1":
                p = "B" if first and prev_same else "I"
            elif scheme == "io":
                p = "I"
            elif scheme == "bioes":
                p = "S" if first and last else "B" if first else "E" if last else "I"
            else:  # bilou
                p = "U" if first and last else "B" if first else "L" if last else "I"
            out[k][i] = f"{p}-{t}"
    return out


def _write(path: Path, scheme: str, layout: str) -> Path:
    lines = ["-DOCSTART- -X- -X- O", ""] if layout == "conll4" else []
    for sentence, tags in zip(CORPUS, _tags(scheme), strict=True):
        for (token, _), tag in zip(sentence, tags, strict=True):
            lines.append({"conll4": f"{token} NN I-NP {tag}", "tab2": f"{token}\t{tag}",
                          "space2": f"{token} {tag}", "tab3": f"{token}\tX\t{tag}"}[layout])  # fmt: skip
        lines.append("\t" if layout == "tab2" else "  ")  # whitespace-only sentence breaks
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _expected() -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    return [(tuple(t for t, _ in s), tuple(tags)) for s, tags in zip(CORPUS, _tags("iob2"), strict=True)]


@pytest.mark.parametrize("layout", ["conll4", "tab2", "space2", "tab3"])
@pytest.mark.parametrize("scheme", ["iob1", "iob2", "io", "bioes", "bilou"])
def test_every_format_and_scheme_parses_to_the_same_sentences(tmp_path: Path, layout: str, scheme: str) -> None:
    expected = _expected()
    if scheme == "io":  # IO cannot mark two adjacent entities of one type: Oslo Bergen becomes one
        expected[1] = (expected[1][0], ("B-geo-loc", "I-geo-loc", "O", "B-geo-loc"))
    sentences = read_conll(_write(tmp_path / "train.txt", scheme, layout))
    assert [(s.tokens, s.tags) for s in sentences] == expected
    assert detect_scheme(_tags(scheme)) == scheme


def test_scheme_can_be_set_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "train.txt", "bioes", "tab2")
    assert [s.tags for s in read_conll(path, scheme="bioes")] == [t for _, t in _expected()]
    with pytest.raises(DataError, match=r"train.txt: sentence 1 has tag 'E-person', which the IOB2 scheme"):
        read_conll(path, scheme="iob2")
    with pytest.raises(DataError, match="SCHEME='bio2' is not one of"):
        DataSource(str(tmp_path), scheme="bio2")


def test_mixed_schemes_are_refused_with_the_fix() -> None:
    with pytest.raises(DataError, match=r"starts an entity with I- .* schemes are mixed"):
        parse_conll(["Oslo\tI-LOC", "", "New\tB-LOC", "York\tE-LOC"])
    with pytest.raises(DataError, match=r"mix BIOES .* and BILOU"):
        parse_conll(["Oslo\tS-LOC", "", "Bergen\tU-LOC"])


def test_plain_bio_is_not_reported_as_broken_iob1(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    parse_conll(["Oslo\tB-LOC", "Bergen\tB-LOC", "", "New\tB-LOC", "York\tI-LOC"])
    assert "did not follow" not in caplog.text


@pytest.mark.parametrize(("name", "split"), [("dev.tsv", "valid"), ("train.conll", "train"), ("test.bio", "test")])
def test_common_file_names_are_found(tmp_path: Path, name: str, split: str) -> None:
    _write(tmp_path / name, "iob2", "tab2")
    assert len(load_split(tmp_path, split)) == 3


def test_empty_file_and_tagless_line_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.txt: no sentences found"):
        load_split(tmp_path, "train")
    (tmp_path / "train.txt").write_text("Oslo\tB-LOC\nBergen\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train.txt:2: expected a token and its tag"):
        load_split(tmp_path, "train")


def test_hub_dataset_in_the_hubs_on_disk_format(tmp_path: Path) -> None:
    """DATA=hub:<dataset>: the real loader (datasets.load_dataset) on a dataset directory laid out as on the hub
    (data/<split>-00000-of-00001.parquet), with class-id tags, renamed columns and split names."""
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-geo-loc", "I-geo-loc", "B-person", "I-person", "B-DATE-TIME", "I-DATE-TIME",
             "B-company", "I-company", "B-creative-work", "I-creative-work"]  # fmt: skip
    features = datasets.Features(
        {
            "words": datasets.Sequence(datasets.Value("string")),
            "labels": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    rows = {
        "words": [[t for t, _ in s] for s in CORPUS],
        "labels": [[names.index(t) for t in tags] for tags in _tags("iob2")],
    }
    (tmp_path / "data").mkdir()
    for split in ("train", "dev", "test"):
        datasets.Dataset.from_dict(rows, features=features).to_parquet(
            str(tmp_path / "data" / f"{split}-00000-of-00001.parquet")
        )
    source = DataSource(f"hub:{tmp_path}", hub_tokens="words", hub_tags="labels",
                        hub_splits={"train": "train", "valid": "dev", "test": "test"})  # fmt: skip
    for split in ("train", "valid", "test"):
        assert [(s.tokens, s.tags) for s in load_split(source, split)] == _expected()
    with pytest.raises(DataError, match=r"no column \['tokens'\].*HUB_TOKENS"):
        load_split(
            DataSource(
                f"hub:{tmp_path}", hub_tags="labels", hub_splits={"train": "train", "valid": "dev", "test": "test"}
            ),
            "train",
        )


def test_byte_order_mark_and_unicode_spaces(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_bytes(
        "\ufeff-DOCSTART- -X- -X- O\n\n10\u00a0000 CD I-NP O\nOslo NNP I-NP I-LOC\n".encode()
    )
    (s,) = load_split(tmp_path, "train")
    assert s.tokens == ("10\u00a0000", "Oslo") and s.tags == ("O", "B-LOC")


def test_hub_splits_keep_their_defaults_and_bad_keys_are_refused() -> None:
    from ner_triton.errors import ConfigError
    from ner_triton.settings import BuildSettings, QualitySettings

    s = BuildSettings.from_env({"HUB_SPLITS": "valid=dev"})
    assert dict(s.source.hub_splits) == {"train": "train", "valid": "dev", "test": "test"}
    with pytest.raises(ConfigError, match="HUB_SPLITS='dev=x' is not valid"):
        BuildSettings.from_env({"HUB_SPLITS": "dev=x"})
    with pytest.raises(ConfigError, match="BASELINE_MARGIN=nan"):
        QualitySettings(baseline_margin_points=float("nan"))
