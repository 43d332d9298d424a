"""The model's tokenizer inside Triton: ``tokenizer.json`` through the ``tokenizers`` library.

The build saves a Hugging Face fast tokenizer; its ``tokenizer.json`` holds the whole pipeline
(normalizer, pre-tokenizer, model). Loading it with ``tokenizers`` alone keeps transformers (and the
torch it may pull in) out of the python-backend stub, and gives the same ids, offsets and word ids
(``tests/unit/test_structure.py`` compares the two on the real tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ner_triton.alignment import PlainEncoding
from ner_triton.errors import ModelLoadError

TOKENIZER_JSON = "tokenizer.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
# BERT's; used when the directory has no special_tokens_map.json.
DEFAULT_SPECIAL = {"cls_token": "[CLS]", "sep_token": "[SEP]"}


def _content(token: Any) -> str:
    """A special token as ``special_tokens_map.json`` writes it: a string or ``{"content": ...}``."""
    return str(token["content"] if isinstance(token, dict) else token)


class TokenizerFile:
    """Sub-tokens of a text, without special tokens, truncation or padding; ``cls``/``sep`` ids for windows."""

    def __init__(self, directory: Path) -> None:
        path = directory / TOKENIZER_JSON
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing: a fast tokenizer (tokenizer.json) is required; run `make build`.")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        special = dict(DEFAULT_SPECIAL)
        special_file = directory / SPECIAL_TOKENS_FILE
        if special_file.is_file():
            special.update(json.loads(special_file.read_text(encoding="utf-8")))
        self.cls_token_id = self._id(_content(special["cls_token"]), path)
        self.sep_token_id = self._id(_content(special["sep_token"]), path)

    def _id(self, token: str, path: Path) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ModelLoadError(f"{path}: special token {token!r} is not in the vocabulary; rebuild the model.")
        return int(token_id)

    def encode_plain(self, text: str) -> PlainEncoding:
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return PlainEncoding(list(enc.ids), [tuple(o) for o in enc.offsets], list(enc.word_ids))  # type: ignore[misc]
