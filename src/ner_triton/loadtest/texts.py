"""What the load generator sends: test sentences of the data (CoNLL-2003 by default) and, now and then, a long
document."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ner_triton.data import load_split
from ner_triton.errors import DataError
from ner_triton.settings import data_source


@dataclass(frozen=True)
class TextPool:
    sentences: tuple[str, ...]
    documents: tuple[str, ...]

    @classmethod
    def from_conll(cls, data: str, split: str = "test", seed: int = 13, doc_sentences: int = 25) -> TextPool:
        """Sentences of ``split`` as plain text; documents = runs of ``doc_sentences`` consecutive sentences."""
        texts = [s.text for s in load_split(data_source(data), split)]
        docs = [" ".join(texts[i : i + doc_sentences]) for i in range(0, len(texts), doc_sentences)]
        if not texts:
            raise DataError(f"{data}: the {split} split has no sentence to send.")
        rng = random.Random(seed)
        rng.shuffle(texts)
        return cls(tuple(texts), tuple(docs))

    def sentence(self, rng: random.Random) -> str:
        return rng.choice(self.sentences)

    def document(self, rng: random.Random) -> str:
        return rng.choice(self.documents)
