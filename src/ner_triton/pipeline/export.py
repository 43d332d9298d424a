"""ONNX export with dynamic batch and sequence axes, checked against PyTorch on real sentences."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ner_triton.alignment import encode_texts, pad_batch
from ner_triton.data import Sentence, load_split
from ner_triton.errors import ExportError
from ner_triton.modeling import NerModel, load_tokenizer
from ner_triton.pipeline.evaluate import onnx_predictor, torch_predictor
from ner_triton.schema import ATTENTION_MASK, CASING_IDS, INPUT_IDS, LOGITS
from ner_triton.settings import BuildSettings
from ner_triton.variants import FP32

log = logging.getLogger(__name__)

OPSET = 17
PARITY_FILE = "parity.json"
# Max |logit difference| allowed between PyTorch and ONNX Runtime FP32.
MAX_ABS_DIFF = 1e-3


def input_names(use_casing: bool) -> list[str]:
    """The ONNX inputs of the BERT step, in order."""
    return [INPUT_IDS, ATTENTION_MASK, *([CASING_IDS] if use_casing else [])]


def parity_sentences(sentences: list[Sentence], n: int = 64) -> list[str]:
    """``n`` real sentences spread over the length range (shortest to longest)."""
    texts = sorted({s.text for s in sentences}, key=len)
    if len(texts) <= n:
        return texts
    step = (len(texts) - 1) / (n - 1)
    return [texts[round(i * step)] for i in range(n)]


def check_parity(model: NerModel, onnx_path: Path, tokenizer: Any, texts: list[str], threads: int) -> dict[str, Any]:
    """Max abs logit difference between PyTorch and ONNX Runtime on ``texts`` in mixed batches."""
    ref, ort = torch_predictor(model), onnx_predictor(onnx_path, threads)
    worst = 0.0
    batches = [texts[i : i + 8] for i in range(0, len(texts), 8)] + [texts[:1], texts[-1:]]
    for batch in batches:
        feed = pad_batch(encode_texts(tokenizer, batch, 512))
        a, b = ref(feed), ort(feed)
        mask = feed[ATTENTION_MASK].astype(bool)
        worst = max(worst, float(np.abs(a - b)[mask].max()))
    return {"sentences": len(texts), "max_abs_diff": worst, "tolerance": MAX_ABS_DIFF}


def export_onnx(settings: BuildSettings, model_dir: Path, output_dir: Path) -> Path:
    """Export the fine-tuned model in ``model_dir`` to ``output_dir/model_fp32.onnx``.

    Raises:
        ExportError: when the export fails or the ONNX logits differ from PyTorch by more than
            :data:`MAX_ABS_DIFF` on real validation sentences of varied lengths.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    model = NerModel.load(model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    names = input_names(model.use_casing)
    sample = pad_batch(encode_texts(tokenizer, ["Maria Lindqvist met ACME officials in Oslo .", "Hi"], 64))
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    path = output_dir / FP32.onnx_file
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, LOGITS]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=names,
                output_names=[LOGITS],
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:
        raise ExportError(f"ONNX export of {model_dir} failed: {exc}") from exc

    texts = parity_sentences(load_split(settings.source, "valid"))
    parity = check_parity(model, path, tokenizer, texts, settings.threads)
    (output_dir / PARITY_FILE).write_text(json.dumps(parity, indent=2) + "\n", encoding="utf-8")
    log.info("ONNX export: max |logit diff| vs PyTorch %.2e on %d sentences", parity["max_abs_diff"], len(texts))
    if parity["max_abs_diff"] > MAX_ABS_DIFF:
        raise ExportError(
            f"ONNX logits differ from PyTorch by {parity['max_abs_diff']:.2e} (> {MAX_ABS_DIFF}); "
            "check the exporter version and opset."
        )
    return path
