"""The model's tokenizer inside Triton: ``tokenizer.json`` through the ``tokenizers`` library.

The build saves a Hugging Face fast tokenizer; its ``tokenizer.json`` holds the whole pipeline
(normalizer, pre-tokenizer, model). Loading it with ``tokenizers`` alone keeps transformers (and the
torch it may pull in) out of the python-backend stub, and gives the same ids, offsets and word ids
(``tests/unit/test_serving_steps.py`` compares the two on the real tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ner_triton.alignment import PlainEncoding
from ner_triton.errors import ModelLoadError

TOKENIZER_JSON = "tokenizer.json"
# Where transformers writes the special tokens: tokenizer_config.json (transformers 5 writes only this one),
# special_tokens_map.json (older releases); the first that names a token wins.
SPECIAL_TOKEN_FILES = ("tokenizer_config.json", "special_tokens_map.json")
DEFAULT_SPECIAL = {"cls_token": "[CLS]", "sep_token": "[SEP]"}  # BERT's, when no file names them


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
        for name in reversed(SPECIAL_TOKEN_FILES):
            if (directory / name).is_file():
                found = json.loads((directory / name).read_text(encoding="utf-8"))
                special.update({k: found[k] for k in DEFAULT_SPECIAL if found.get(k)})
        self.cls_token_id = self._id(_content(special["cls_token"]), path)
        self.sep_token_id = self._id(_content(special["sep_token"]), path)

    def _id(self, token: str, path: Path) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ModelLoadError(f"{path}: special token {token!r} is not in the vocabulary; rebuild the model.")
        return int(token_id)

    @property
    def unk_token_id(self) -> int | None:
        """The id of the model's unknown token (``[UNK]`` for WordPiece); None for a model without one."""
        unk = getattr(self.tokenizer.model, "unk_token", None)
        token_id = self.tokenizer.token_to_id(unk) if unk else None
        return None if token_id is None else int(token_id)

    def encode_plain(self, text: str) -> PlainEncoding:
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return PlainEncoding(list(enc.ids), [tuple(o) for o in enc.offsets], list(enc.word_ids))  # type: ignore[misc]
