"""Names shared by every part of the project: tensor names, dtypes, file names.

This module is the single source of truth: the exporter writes these names into the ONNX
graph, the model repository writes them into ``config.pbtxt`` and the clients send them.
"""

from __future__ import annotations

from typing import Final

# ONNX / Triton tensor names of the BERT step.
INPUT_IDS: Final = "input_ids"
ATTENTION_MASK: Final = "attention_mask"
CASING_IDS: Final = "casing_ids"
LOGITS: Final = "logits"

# Files inside a fine-tuned model directory (besides the Hugging Face files).
LABELS_FILE: Final = "labels.json"
# In ner/<version>/: which variant the fused model serves, the build's figures and its quality-signal baseline.
SERVED_FILE: Final = "served.json"
NER_META_FILE: Final = "ner_model.json"
CASING_WEIGHTS_FILE: Final = "casing_embedding.safetensors"

# Files inside the build's artifacts directory.
MODEL_DIR: Final = "model"
ONNX_DIR: Final = "onnx"
# (the ONNX file of each model variant is in ner_triton.variants, the variant registry)

# Files Triton loads from a model's version directory.
ONNX_MODEL_FILE: Final = "model.onnx"  # the onnxruntime backend (and the python BERT step)
PLAN_MODEL_FILE: Final = "model.plan"  # the tensorrt backend
REPORT_JSON: Final = "report.json"
REPORT_MD: Final = "report.md"

# Label id used for positions that take no part in the loss (special tokens, later sub-tokens).
IGNORE_INDEX: Final = -100

# Tensor names of the serving steps (ensemble "ner": TEXT in, ENTITIES out).
TEXT: Final = "TEXT"
ENTITIES: Final = "ENTITIES"
OFFSETS: Final = "OFFSETS"
WORD_IDS: Final = "WORD_IDS"
OWNED: Final = "OWNED"
TEXT_INDEX: Final = "TEXT_INDEX"

# Model names in the Triton repository.
ENSEMBLE: Final = "ner"
PREPROCESS: Final = "ner_preprocess"
POSTPROCESS: Final = "ner_postprocess"
BERT_PREFIX: Final = "ner_bert_"
# Equal-shape layouts: the router in front of each BERT step, one queue per length bucket (runtime.router).
ROUTE_PREFIX: Final = "ner_route_"
TOKENIZER_DIR: Final = "tokenizer"
