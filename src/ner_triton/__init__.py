"""ner_triton: fine-tune, quantize and serve a BERT named-entity recognizer on Triton."""

from __future__ import annotations

__version__ = "0.1.0"
