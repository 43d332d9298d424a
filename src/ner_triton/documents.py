"""Documents mode: a document's sentences sent as one text, so each sentence is read with its neighbours.

The server windows a long text (``max_length`` sub-tokens with a ``stride`` overlap; every sub-token is predicted
in the window where it sits farthest from an edge), so a document sent as one text is served with context on both
sides of each sentence: no extra input, and the same behaviour in every layout (python, NGC, GPU). This module is
the way there and back, shared by the client, ``ner-eval-served`` and the build's in-process scoring:

* :meth:`Documents.of` joins each document's sentences with :data:`SEPARATOR` into pieces of at most ``max_bytes``
  UTF-8 bytes (a longer document becomes several consecutive pieces, and context stops at a piece's edge; a single
  sentence over ``max_bytes`` is a piece of its own). Blank sentences are never sent.
* :meth:`Documents.entities` maps the entities found in each piece back to its sentences, with offsets into each
  sentence's own text (``sentence[e.start:e.end] == e.word``). An entity that runs over a sentence boundary is cut
  there: one entity per sentence it covers, same type and score. A sentence's entities never leave it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ner_triton.decoding import Entity
from ner_triton.errors import InvalidInputError

SEPARATOR = "\n"  # between the sentences of a piece: whitespace to the tokenizer, a line break to a reader
# The default size of a piece: the client's default request size (DEFAULT_MAX_BYTES), which keeps ordinary text
# out of the server's bulk lane; the build scores documents cut the same way the client cuts them.
PIECE_BYTES = 4096


@dataclass(frozen=True)
class Piece:
    """Consecutive sentences of one document joined into one text; ``starts[i]`` is where sentence i begins."""

    sentences: tuple[str, ...]
    starts: tuple[int, ...]

    @property
    def text(self) -> str:
        return SEPARATOR.join(self.sentences)

    @property
    def blank(self) -> bool:
        """Whether the piece holds no word (such a piece is not sent: the server refuses blank text)."""
        return not any(s.strip() for s in self.sentences)

    def split(self, entities: Sequence[Entity]) -> list[list[Entity]]:
        """The entities of :attr:`text`, per sentence, with offsets into the sentence (cut at sentence ends)."""
        out: list[list[Entity]] = [[] for _ in self.sentences]
        for e in entities:
            for i, (sentence, start) in enumerate(zip(self.sentences, self.starts, strict=True)):
                a, b = max(e.start - start, 0), min(e.end - start, len(sentence))
                if a < b and sentence[a:b].strip():
                    out[i].append(Entity(e.entity, a, b, sentence[a:b], e.score))
        return out


def pieces(sentences: Sequence[str], max_bytes: int) -> list[Piece]:
    """``sentences`` (one document) joined in order into pieces of at most ``max_bytes`` UTF-8 bytes."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes={max_bytes} must be positive")
    out: list[Piece] = []
    group: list[str] = []
    size = 0
    sep = len(SEPARATOR.encode("utf-8"))
    for sentence in sentences:
        n = len(sentence.encode("utf-8"))
        if group and size + sep + n > max_bytes:
            out.append(_piece(group))
            group, size = [], 0
        size += n + (sep if group else 0)
        group.append(sentence)
    if group:
        out.append(_piece(group))
    return out


def _piece(sentences: list[str]) -> Piece:
    starts, pos = [], 0
    for s in sentences:
        starts.append(pos)
        pos += len(s) + len(SEPARATOR)
    return Piece(tuple(sentences), tuple(starts))


@dataclass(frozen=True)
class Documents:
    """Many documents ready to send: the texts of their pieces in one list (:attr:`texts`), and the way back
    from one entity list per text to one per sentence (:meth:`entities`)."""

    pieces: tuple[tuple[Piece, ...], ...]  # per document

    @classmethod
    def of(cls, documents: Sequence[Sequence[str]], max_bytes: int) -> Documents:
        if isinstance(documents, str | bytes) or any(isinstance(d, str | bytes) for d in documents):
            raise InvalidInputError("documents must be a list of documents, each a list of sentences: wrap them.")
        for d, doc in enumerate(documents):
            bad = next((i for i, s in enumerate(doc) if not isinstance(s, str)), None)
            if bad is not None:
                raise InvalidInputError(f"document {d}, sentence {bad} is a {type(doc[bad]).__name__}, not a str: "
                                        "decode it to str first.")  # fmt: skip
        return cls(tuple(tuple(pieces(doc, max_bytes)) for doc in documents))

    @property
    def texts(self) -> list[str]:
        """The text of every piece that holds a word, in order."""
        return [p.text for doc in self.pieces for p in doc if not p.blank]

    def entities(self, found: Sequence[Sequence[Entity]]) -> list[list[list[Entity]]]:
        """``found[k]`` are the entities of ``texts[k]``; the result is per document, per sentence."""
        if len(found) != len(self.texts):
            raise ValueError(f"{len(found)} entity lists for {len(self.texts)} texts")
        it = iter(found)
        return [[ents for p in doc for ents in (p.split(()) if p.blank else p.split(next(it)))] for doc in self.pieces]
