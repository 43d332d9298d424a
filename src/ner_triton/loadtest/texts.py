"""What the load generator sends: sentences (a text file with one text per line, or the test split of a data
directory - CoNLL-2003 by default) and, now and then, a long document made of consecutive sentences."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ner_triton.data import load_split
from ner_triton.errors import DataError
from ner_triton.settings import data_source


@dataclass(frozen=True)
class TextPool:
    sentences: tuple[str, ...]
    documents: tuple[str, ...]

    @classmethod
    def from_source(cls, data: str, seed: int = 13, doc_sentences: int = 25) -> TextPool:
        """A text file (one text per line, e.g. loadtest/data/sentences.txt) or a data location of the build
        (a directory of split files, ``hub``, ``hub:<dataset>``)."""
        path = Path(data)
        if path.is_file():
            return cls.from_lines(path, seed, doc_sentences)
        return cls.from_conll(data, seed=seed, doc_sentences=doc_sentences)

    @classmethod
    def from_lines(cls, path: Path, seed: int = 13, doc_sentences: int = 25) -> TextPool:
        """Every non-blank line of a UTF-8 text file is one text."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): convert it to UTF-8."
            ) from exc
        return cls._pool([line.strip() for line in lines if line.strip()], str(path), seed, doc_sentences)

    @classmethod
    def from_conll(cls, data: str, split: str = "test", seed: int = 13, doc_sentences: int = 25) -> TextPool:
        """Sentences of ``split`` as plain text; documents = runs of ``doc_sentences`` consecutive sentences."""
        texts = [s.text for s in load_split(data_source(data), split)]
        return cls._pool(texts, f"{data}: the {split} split", seed, doc_sentences)

    @classmethod
    def _pool(cls, texts: list[str], where: str, seed: int, doc_sentences: int) -> TextPool:
        if not texts:
            raise DataError(f"{where} has no sentence to send: give a file with one text per line or a data directory.")
        docs = [" ".join(texts[i : i + doc_sentences]) for i in range(0, len(texts), doc_sentences)]
        rng = random.Random(seed)
        rng.shuffle(texts)
        return cls(tuple(texts), tuple(docs))

    def sentence(self, rng: random.Random) -> str:
        return rng.choice(self.sentences)

    def document(self, rng: random.Random) -> str:
        return rng.choice(self.documents)
