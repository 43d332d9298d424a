"""Triton python-backend adapter of ``ner_preprocess``; the logic is ner_triton.runtime.steps.Preprocessor."""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ner_triton.runtime.adapters.responses import error_response
from ner_triton.runtime.steps import Limits, Preprocessor
from ner_triton.schema import TEXT, TOKENIZER_DIR


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = Path(args["model_repository"]) / args["model_version"]
        self.step = Preprocessor(here / TOKENIZER_DIR, Limits.from_parameters(params))
        self.name = config.get("name", "ner_preprocess")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                text = pb_utils.get_input_tensor_by_name(request, TEXT).as_numpy()
                outputs = self.step(text)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()]))
            except Exception as exc:  # never let one request take the stub down
                responses.append(error_response(exc, self.name))
        return responses
