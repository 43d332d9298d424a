"""Token-level NER data from files in the common column formats, or from a dataset hub.

Files: one token per line, the token in the first column and its tag in the last (CoNLL-2003's
``WORD POS CHUNK NER``, two-column ``token<TAB>tag`` or ``token tag``, any number of columns in between),
sentences separated by blank or whitespace-only lines, ``-DOCSTART-`` lines optional: where present they
start documents, and each sentence carries its neighbours in its document as context (``Sentence.left`` /
``right``; no markers, no context). Tags are ``O`` or
``<prefix>-<type>`` where the type is any run of non-space characters (``B-geo-loc``, ``I-DATE-TIME``).

Tagging schemes - IOB1, IOB2 (BIO), BIOES, BILOU and IO - are detected per file from the tags (or set with
``SCHEME=``) and every sentence is returned in one internal scheme, IOB2. Errors name the file and line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from operator import itemgetter
from pathlib import Path

from ner_triton.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# File names tried for each split, in order: this project's names, CoNLL-2003's, then common others.
_STEMS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "valid": ("valid", "dev", "validation", "val"),
    "test": ("test",),
}
_CONLL_2003 = {"train": "eng.train", "valid": "eng.testa", "test": "eng.testb"}
_OTHER_SUFFIXES = (".tsv", ".conll", ".bio", ".iob", "")
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    split: (*(f"{s}.txt" for s in stems), _CONLL_2003[split], *(s + x for s in stems for x in _OTHER_SUFFIXES))
    for split, stems in _STEMS.items()
}
HUB = "hub"  # DATA=hub: CoNLL-2003 from the hub; DATA=hub:<name or local dataset directory>: another dataset
HUB_DATASET = "eriktks/conll2003"
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
DOCSTART = "-DOCSTART-"  # CoNLL's document marker: a line (or a hub row) that starts a new document
CONTEXT_WORDS = 128  # document context kept per side of a sentence (more than any sub-token budget needs)

SCHEMES = ("auto", "iob1", "iob2", "bioes", "bilou", "io")
_TAG = re.compile(r"^(?:O|([BIESLU])-(\S+))$")
_SCHEME_PREFIXES = {"iob1": "BI", "iob2": "BI", "io": "I", "bioes": "BIES", "bilou": "BILU"}


@dataclass(frozen=True)
class Sentence:
    """One sentence: its tokens and their IOB2 tags.

    ``left`` / ``right``: tokens of the sentences before and after it in its document (at most
    :data:`CONTEXT_WORDS` each side, nearest kept), empty when the data marks no documents. They are context
    only (document context, FLERT): never labelled, never scored. ``document``: the index of its document in its
    split, -1 when the data marks none (:func:`documents_of`).
    """

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    left: tuple[str, ...] = field(default=(), repr=False, compare=False)
    right: tuple[str, ...] = field(default=(), repr=False, compare=False)
    document: int = field(default=-1, repr=False, compare=False)

    @property
    def in_document(self) -> bool:
        """Whether the sentence has neighbours in its document (context to read it with)."""
        return bool(self.left or self.right)

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


def with_document_context(documents: Sequence[Sequence[Sentence]], words: int | None = None) -> list[Sentence]:
    """The sentences of ``documents`` in order, each with up to ``words`` (default :data:`CONTEXT_WORDS`) tokens
    of its neighbouring sentences in the same document as ``left`` / ``right`` context."""
    words = CONTEXT_WORDS if words is None else words
    out: list[Sentence] = []
    for d, doc in enumerate(documents):
        for i, sentence in enumerate(doc):
            left: list[str] = []
            for before in reversed(doc[:i]):
                if len(left) >= words:
                    break
                left[:0] = before.tokens
            right: list[str] = []
            for after in doc[i + 1 :]:
                if len(right) >= words:
                    break
                right.extend(after.tokens)
            out.append(
                replace(sentence, left=tuple(left[-words:]) if words else (), right=tuple(right[:words]), document=d)
            )
    return out


def documents_of(sentences: Sequence[Sentence]) -> list[list[Sentence]]:
    """``sentences`` grouped into their documents, in order: consecutive sentences of one ``document``; a sentence
    of data without document markers is a document of its own."""
    out: list[list[Sentence]] = []
    for s in sentences:
        if out and s.document >= 0 and out[-1][-1].document == s.document:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def _split_tag(tag: str) -> tuple[str, str]:
    prefix, _, etype = tag.partition("-")
    return prefix, etype


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (or IO) to IOB2: an ``I-X`` that does not continue an entity of type X starts one (``B-X``)."""
    out: list[str] = []
    prev_type = None
    for tag in tags:
        if tag == "O":
            out.append(tag)
            prev_type = None
            continue
        prefix, etype = _split_tag(tag)
        out.append("B-" + etype if prefix == "I" and prev_type != etype else tag)
        prev_type = etype
    return out


def bioes_to_iob2(tags: Sequence[str]) -> list[str]:
    """BIOES (``S-``/``E-``) or BILOU (``U-``/``L-``) to IOB2: single-token entities start (``B-``), ends continue."""
    mapped = []
    for tag in tags:
        prefix, etype = _split_tag(tag)
        mapped.append(tag if tag == "O" else {"S": "B", "U": "B", "E": "I", "L": "I"}.get(prefix, prefix) + "-" + etype)
    return iob1_to_iob2(mapped)  # an I- that continues nothing (a broken file) still starts an entity


def _starts_with_i(tags: Sequence[str]) -> int | None:
    """Index of the first ``I-X`` that does not continue an entity of type X (IOB1/IO style), or None."""
    prev_type = None
    for i, tag in enumerate(tags):
        prefix, etype = _split_tag(tag)
        if prefix == "I" and prev_type != etype:
            return i
        prev_type = None if tag == "O" else etype
    return None


def detect_scheme(sentences: Sequence[Sequence[str]], source: str = "<lines>") -> str:
    """The tagging scheme of ``sentences`` (tag sequences): ``bioes``, ``bilou``, ``iob1``, ``io`` or ``iob2``.

    BIOES and BILOU are told by their ``S-``/``E-`` or ``U-``/``L-`` tags; IOB1 (and IO, which has no ``B-``)
    start entities with ``I-``; IOB2 never does. Tags of two schemes in one file raise :class:`DataError`.
    """
    prefixes = {_split_tag(t)[0] for tags in sentences for t in tags if t != "O"}
    i_start = next((k for k, tags in enumerate(sentences) if _starts_with_i(tags) is not None), None)
    if prefixes & set("ES") and prefixes & set("LU"):
        raise DataError(
            f"{source}: the tags mix BIOES (E-/S-) and BILOU (L-/U-) prefixes; convert the file to one scheme "
            "(or set SCHEME=bioes or SCHEME=bilou to name the one it uses)."
        )
    if prefixes & set("ESLU"):
        if i_start is not None:
            raise DataError(
                f"{source}: sentence {i_start + 1} starts an entity with I- (IOB1/IO) but the file also has "
                f"{'/'.join(sorted(prefixes & set('ESLU')))}- tags (BIOES/BILOU): the schemes are mixed; convert "
                "the file to one scheme or set SCHEME= to the one it uses."
            )
        return "bioes" if prefixes & set("ES") else "bilou"
    if i_start is not None:
        return "iob1" if "B" in prefixes else "io"
    return "iob2"


def to_iob2(sentences: Sequence[Sequence[str]], scheme: str, source: str = "<lines>") -> list[list[str]]:
    """Tag sequences in ``scheme`` (or ``auto``: detected) converted to IOB2."""
    if scheme not in SCHEMES:
        raise DataError(f"SCHEME={scheme!r} is not one of {', '.join(SCHEMES)}.")
    if scheme == "auto":
        scheme = detect_scheme(sentences, source)
    allowed = _SCHEME_PREFIXES[scheme]
    for k, tags in enumerate(sentences):
        bad = next((t for t in tags if t != "O" and _split_tag(t)[0] not in allowed), None)
        if bad is not None:
            raise DataError(
                f"{source}: sentence {k + 1} has tag {bad!r}, which the {scheme.upper()} scheme does not use "
                f"(its prefixes: {', '.join(allowed)}); set SCHEME= to the file's scheme, or SCHEME=auto."
            )
    convert = bioes_to_iob2 if scheme in ("bioes", "bilou") else iob1_to_iob2
    return [convert(tags) for tags in sentences]


def _columns(line: str) -> list[str]:
    """Tab-separated fields when the line has tabs (a token may then hold spaces), else space-separated. Only
    ASCII spaces and tabs separate: a token may hold a no-break or other Unicode space."""
    if "\t" in line:
        return [c.strip(" ") for c in line.split("\t") if c.strip(" ")]
    return [c for c in line.split(" ") if c]


def parse_conll(lines: Iterable[str], source: str = "<lines>", scheme: str = "auto") -> list[Sentence]:
    """Parse token-per-line NER lines (token first, tag last); returns sentences with IOB2 tags.

    Raises:
        DataError: naming ``source`` and the line number, for a line without a tag, a tag that is not ``O``
            or ``<prefix>-<type>``, mixed tagging schemes, or when there is no sentence at all.
    """
    if scheme not in SCHEMES:
        raise DataError(f"SCHEME={scheme!r} is not one of {', '.join(SCHEMES)}.")
    raw: list[tuple[list[str], list[str]]] = []
    doc_of: list[int] = []  # the document of each sentence (count of -DOCSTART- lines before it)
    docs = 0
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            raw.append((list(tokens), list(tags)))
            doc_of.append(docs)
            tokens.clear()
            tags.clear()

    for lineno, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            flush()
            continue
        cols = _columns(line)
        if cols[0] == DOCSTART:
            flush()
            docs += 1
            continue
        if len(cols) < 2:
            raise DataError(
                f"{source}:{lineno}: expected a token and its tag (TOKEN [...] TAG, separated by tabs or spaces), "
                f"found {len(cols)} column: {line[:80]!r}. Sentences are separated by blank lines."
            )
        tag = cols[-1]
        if not _TAG.match(tag):
            raise DataError(
                f"{source}:{lineno}: unknown NER tag {tag!r}; expected O or PREFIX-TYPE with a prefix of "
                "B, I, E, S, L or U (IOB1, IOB2, BIOES, BILOU, IO) and a type of non-space characters."
            )
        tokens.append(cols[0])
        tags.append(tag)
    flush()
    if not raw:
        raise DataError(f"{source}: no sentences found; the file is empty or holds only -DOCSTART-.")
    tag_seqs = [t for _, t in raw]
    used = detect_scheme(tag_seqs, source) if scheme == "auto" else scheme
    converted = to_iob2(tag_seqs, used, source)
    if used == "iob1":
        odd_b = sum(
            1
            for t in tag_seqs
            for i, tag in enumerate(t)
            if tag.startswith("B-") and (i == 0 or _split_tag(t[i - 1])[1] != _split_tag(tag)[1])
        )
        if odd_b:  # IOB1 uses B-X only right after an X token; such a B-X still starts an entity
            log.info("%s: %d B- tags did not follow an entity of their type (kept as starts)", source, odd_b)
    log.debug("%s: %d sentences, scheme %s, %d documents", source, len(raw), used, docs)
    sentences = [Sentence(tuple(tok), tuple(tg)) for (tok, _), tg in zip(raw, converted, strict=True)]
    return _in_documents(sentences, doc_of) if docs else sentences


def _in_documents(sentences: Sequence[Sentence], doc_of: Sequence[int]) -> list[Sentence]:
    """``sentences`` with document context, grouped by ``doc_of`` (consecutive equal ids: one document)."""
    pairs = zip(sentences, doc_of, strict=True)
    return with_document_context([[s for s, _ in group] for _, group in groupby(pairs, key=itemgetter(1))])


def read_conll(path: Path, scheme: str = "auto") -> list[Sentence]:
    """Read one file; see :func:`parse_conll`."""
    if not path.is_file():
        raise DataError(f"{path}: no such file. Set DATA to a directory holding train/valid/test files.")
    try:
        with path.open(encoding="utf-8-sig") as fh:  # -sig: a byte-order mark is not part of the first token
            return parse_conll(fh, source=str(path), scheme=scheme)
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
        f"{data_dir}: no {split} file (looked for {', '.join(SPLIT_FILES[split][:6])}, ...). "
        "Name the files train/valid/test (.txt, .tsv, .conll), or set DATA=hub:<dataset>."
    )


@dataclass(frozen=True)
class DataSource:
    """Where the data is and how to read it.

    ``location``: a directory of train/valid/test files, ``hub`` (CoNLL-2003 from the Hugging Face hub) or
    ``hub:<name>`` (any token-classification dataset, by hub id or local dataset directory), whose token and
    tag columns are ``hub_tokens`` / ``hub_tags`` and whose splits are named by ``hub_splits``.
    """

    location: str
    scheme: str = "auto"
    hub_tokens: str = "tokens"
    hub_tags: str = "ner_tags"
    hub_splits: Mapping[str, str] = field(default_factory=lambda: dict(HUB_SPLITS))

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise DataError(f"SCHEME={self.scheme!r} is not one of {', '.join(SCHEMES)}.")
        missing = [s for s in SPLITS if s not in self.hub_splits]
        if missing:
            raise DataError(f"HUB_SPLITS names no split for {missing}: e.g. train=train,valid=validation,test=test.")

    @property
    def hub_dataset(self) -> str | None:
        """The hub dataset this source reads, or None for local files."""
        if self.location == HUB:
            return HUB_DATASET
        if self.location.startswith(HUB + ":"):
            return self.location[len(HUB) + 1 :]
        return None

    def load(self, split: str) -> list[Sentence]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
        if self.hub_dataset is not None:
            return load_hub_split(self, split)
        data_dir = Path(self.location)
        if not data_dir.is_dir():
            raise DataError(
                f"DATA={data_dir} is not a directory. Point it at a directory of train/valid/test files "
                "(CoNLL-2003's eng.train/eng.testa/eng.testb work too), or use DATA=hub or DATA=hub:<dataset>."
            )
        return read_conll(split_path(data_dir, split), self.scheme)


def load_hub_split(source: DataSource, split: str) -> list[Sentence]:
    """A split of a hub dataset (needs ``datasets``; a hub id needs network, a local dataset directory does not).

    Tags may be class ids (a ``ClassLabel`` sequence feature names them) or strings.
    """
    name = source.hub_dataset
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as exc:
        raise DataError(
            f"DATA={source.location} needs the 'datasets' package: pip install 'ner-triton[hub]', "
            "or set DATA to a directory of train/valid/test files."
        ) from exc
    try:
        ds = datasets.load_dataset(name, split=source.hub_splits[split])
    except Exception as exc:  # the hub raises many kinds; all mean "cannot load"
        raise DataError(
            f"cannot load {name!r} split {source.hub_splits[split]!r} from the hub: {exc}. Without network access, "
            "set DATA to a directory of files, or to hub:<local dataset directory>; HUB_SPLITS renames splits."
        ) from exc
    missing = [c for c in (source.hub_tokens, source.hub_tags) if c not in ds.column_names]
    if missing:
        raise DataError(
            f"{name}: no column {missing} (columns: {ds.column_names}); set HUB_TOKENS / HUB_TAGS to the token and "
            "tag columns."
        )
    feature = ds.features[source.hub_tags]
    names = getattr(getattr(feature, "feature", None), "names", None)
    where = f"{name} [{split}]"

    def tag_name(k: int, tag: object) -> str:
        if not names:
            return str(tag)
        if not isinstance(tag, int) or not 0 <= tag < len(names):
            raise DataError(f"{where}: row {k}: tag id {tag!r} is not one of the {len(names)} class labels.")
        return str(names[tag])

    rows = []
    doc_of: list[int] = []
    docs = 0
    for k, row in enumerate(ds):
        tokens, tags = list(row[source.hub_tokens]), list(row[source.hub_tags])
        if len(tokens) != len(tags):
            raise DataError(f"{where}: row {k} has {len(tokens)} tokens but {len(tags)} tags; fix the dataset.")
        if tokens and tokens[0] == DOCSTART:
            docs += 1
        elif tokens:
            rows.append((tokens, [tag_name(k, t) for t in tags]))
            doc_of.append(docs)
    for k, (_, tags) in enumerate(rows):
        bad = next((t for t in tags if not _TAG.match(t)), None)
        if bad is not None:
            raise DataError(f"{where}: row {k}: unknown NER tag {bad!r}; expected O or PREFIX-TYPE.")
    converted = to_iob2([t for _, t in rows], source.scheme, where)
    sentences = [Sentence(tuple(tok), tuple(tg)) for (tok, _), tg in zip(rows, converted, strict=True)]
    return _in_documents(sentences, doc_of) if docs else sentences


def load_split(data: str | Path | DataSource, split: str) -> list[Sentence]:
    """Load ``split`` from a :class:`DataSource` (a plain location: files or ``hub[:<name>]`` with defaults)."""
    source = data if isinstance(data, DataSource) else DataSource(str(data))
    return source.load(split)


def entity_counts(sentences: Sequence[Sentence]) -> dict[str, int]:
    """Number of entities of each type (IOB2: one per B- tag)."""
    counts: dict[str, int] = {}
    for sentence in sentences:
        for tag in sentence.tags:
            if tag.startswith("B-"):
                counts[tag[2:]] = counts.get(tag[2:], 0) + 1
    return dict(sorted(counts.items()))
