"""Triton python-backend adapter of ``ner_preprocess``; the logic is ner_triton.runtime.steps.Preprocessor.

It exports the input half of the quality signals (texts, windows, sub-tokens, [UNK] share, refused requests;
ner_triton.runtime.quality_metrics) under its own model name, unless switched off (``NER_QUALITY_METRICS=0``)."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ner_triton.runtime.adapters.responses import error_response
from ner_triton.runtime.quality_metrics import per_text, quality_metrics
from ner_triton.runtime.steps import Limits, Preprocessor
from ner_triton.schema import TEXT, TOKENIZER_DIR


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = Path(args["model_repository"]) / args["model_version"]
        self.step = Preprocessor(here / TOKENIZER_DIR, Limits.from_parameters(params))
        self.name = config.get("name", "ner_preprocess")
        self.quality = quality_metrics(args, params, unk_id=self.step.tokenizer.unk_token_id, outputs=False)

    def execute(self, requests):
        responses, answered = [], []
        for request in requests:
            try:
                text = pb_utils.get_input_tensor_by_name(request, TEXT).as_numpy()
                outputs = self.step(text)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()]))
                answered.append((per_text(outputs, text.size), np.full(text.size, b"[]", dtype=np.object_)))
            except Exception as exc:  # never let one request take the stub down
                responses.append(error_response(exc, self.name))
                if self.quality is not None:
                    self.quality.reject(exc)
        if self.quality is not None and answered:
            self.quality.observe(answered)
        return responses

    def finalize(self):
        if self.quality is not None:
            self.quality.close()
