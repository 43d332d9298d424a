"""CoNLL-2003 data: the original 4-column IOB1 files, or the same data set from the hub.

Every sentence is returned with IOB2 (BIO) tags, whatever the scheme of the source file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ner_triton.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# File names tried for each split, in order: this project's names, then the original ones.
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.txt", "eng.train"),
    "valid": ("valid.txt", "eng.testa", "dev.txt"),
    "test": ("test.txt", "eng.testb"),
}
HUB_DATASET = "eriktks/conll2003"
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}

_TAG = re.compile(r"^(O|[BI]-[A-Za-z][A-Za-z0-9_]*)$")
N_COLUMNS = 4


@dataclass(frozen=True)
class Sentence:
    """One sentence: its tokens and their IOB2 tags."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def text(self) -> str:
        """The sentence as plain text: tokens joined by single spaces."""
        return " ".join(self.tokens)

    def token_starts(self) -> list[int]:
        """Character offset of each token in :attr:`text`."""
        starts, pos = [], 0
        for token in self.tokens:
            starts.append(pos)
            pos += len(token) + 1
        return starts


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Convert IOB1 tags (an entity starts with I- unless it touches one of its type) to IOB2."""
    out: list[str] = []
    prev_type = None
    for tag in tags:
        if tag == "O":
            out.append(tag)
            prev_type = None
            continue
        prefix, etype = tag.split("-", 1)
        if prefix == "I" and prev_type != etype:
            out.append("B-" + etype)
        else:
            out.append(tag)
        prev_type = etype
    return out


def parse_conll(lines: Iterable[str], source: str = "<lines>") -> list[Sentence]:
    """Parse CoNLL-2003 lines (WORD POS CHUNK NER), skipping ``-DOCSTART-`` lines.

    Raises:
        DataError: naming ``source`` and the line number, for a line with the wrong column count,
            a tag that is not ``O``/``B-X``/``I-X``, or when there is no sentence at all.
    """
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    odd_b = 0

    def flush() -> None:
        nonlocal odd_b
        if tokens:
            for i, tag in enumerate(tags):
                # IOB1 uses B-X only right after an X token; the original train file breaks this
                # twice. Such a B-X still starts an entity, so it is kept and counted.
                if tag.startswith("B-") and (i == 0 or tags[i - 1][2:] != tag[2:]):
                    odd_b += 1
            sentences.append(Sentence(tuple(tokens), tuple(iob1_to_iob2(tags))))
            tokens.clear()
            tags.clear()

    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            flush()
            continue
        cols = line.split()
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        if len(cols) != N_COLUMNS:
            raise DataError(
                f"{source}:{lineno}: expected {N_COLUMNS} space-separated columns "
                f"(WORD POS CHUNK NER), found {len(cols)}: {line[:80]!r}. "
                "Is this an original CoNLL-2003 file?"
            )
        tag = cols[-1]
        if not _TAG.match(tag):
            raise DataError(f"{source}:{lineno}: unknown NER tag {tag!r}; expected O, B-TYPE or I-TYPE.")
        tokens.append(cols[0])
        tags.append(tag)
    flush()
    if not sentences:
        raise DataError(f"{source}: no sentences found; the file is empty or holds only -DOCSTART-.")
    if odd_b:
        log.info("%s: %d B- tags did not follow an entity of their type (kept as starts)", source, odd_b)
    return sentences


def read_conll(path: Path) -> list[Sentence]:
    """Read one CoNLL-2003 file; see :func:`parse_conll`."""
    if not path.is_file():
        raise DataError(f"{path}: no such file. Set DATA to a directory holding train/valid/test files.")
    try:
        with path.open(encoding="utf-8") as fh:
            return parse_conll(fh, source=str(path))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc


def split_path(data_dir: Path, split: str) -> Path:
    """The file of ``split`` inside ``data_dir`` (first matching name of :data:`SPLIT_FILES`)."""
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    for name in SPLIT_FILES[split]:
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{data_dir}: no {split} file (looked for {', '.join(SPLIT_FILES[split])}). "
        "Set DATA to the directory of the CoNLL-2003 files, or to 'hub'."
    )


def load_hub_split(split: str, dataset: str = HUB_DATASET) -> list[Sentence]:
    """Load a split of CoNLL-2003 from the Hugging Face dataset hub (needs ``datasets`` and network)."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as exc:
        raise DataError(
            "DATA=hub needs the 'datasets' package: pip install 'ner-triton[hub]', "
            "or set DATA to a directory of CoNLL-2003 files."
        ) from exc
    try:
        ds = datasets.load_dataset(dataset, split=HUB_SPLITS[split])
    except Exception as exc:  # the hub raises many kinds; all mean "cannot load"
        raise DataError(
            f"cannot load {dataset!r} split {split!r} from the hub: {exc}. "
            "Without network access, set DATA to a directory of CoNLL-2003 files."
        ) from exc
    names = ds.features["ner_tags"].feature.names
    return [
        Sentence(tuple(row["tokens"]), tuple(iob1_to_iob2([names[t] for t in row["ner_tags"]])))
        for row in ds
        if row["tokens"] and row["tokens"][0] != "-DOCSTART-"
    ]


def load_split(data: str | Path, split: str) -> list[Sentence]:
    """Load ``split`` from a directory of CoNLL files, or from the hub when ``data == 'hub'``."""
    if str(data) == "hub":
        return load_hub_split(split)
    data_dir = Path(data)
    if not data_dir.is_dir():
        raise DataError(
            f"DATA={data_dir} is not a directory. Point it at the CoNLL-2003 files "
            "(train.txt/valid.txt/test.txt or eng.train/eng.testa/eng.testb), or use DATA=hub."
        )
    return read_conll(split_path(data_dir, split))


def entity_counts(sentences: Sequence[Sentence]) -> dict[str, int]:
    """Number of entities of each type (IOB2: one per B- tag)."""
    counts: dict[str, int] = {}
    for sentence in sentences:
        for tag in sentence.tags:
            if tag.startswith("B-"):
                counts[tag[2:]] = counts.get(tag[2:], 0) + 1
    return dict(sorted(counts.items()))
