"""Triton python-backend adapter of ``ner_bert_*``: ONNX Runtime over a ragged dynamic batch.

The logic is ner_triton.runtime.bert.BertRunner (requests grouped by length, padded, run); bad
requests get their own error response and the good requests of the same batch are still run.
"""

import json
import os
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ner_triton.errors import InvalidInputError
from ner_triton.runtime.adapters.responses import error_response
from ner_triton.runtime.bert import BertRunner
from ner_triton.schema import LOGITS, ONNX_MODEL_FILE


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = Path(args["model_repository"]) / args["model_version"]
        threads = int(os.environ.get("NER_ORT_THREADS", params.get("threads", "1")))
        max_padding = float(params.get("max_padding", "0.25"))
        spinning = params.get("spinning", "1") != "0"
        max_run_tokens = int(params.get("max_run_tokens", "8192"))
        onnx_path = here / params.get("onnx_file", ONNX_MODEL_FILE)
        self.runner = BertRunner(onnx_path, threads, max_padding, spinning, max_run_tokens)
        self.name = config.get("name", "ner_bert")

    def execute(self, requests):
        responses = [None] * len(requests)
        feeds, slots = [], []
        for i, request in enumerate(requests):
            try:
                feed = {}
                for name in self.runner.input_names:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is None:
                        raise InvalidInputError(f"missing input {name}")
                    feed[name] = tensor.as_numpy()
                self.runner.validate(feed)
                feeds.append(feed)
                slots.append(i)
            except InvalidInputError as exc:
                responses[i] = error_response(exc, self.name)
        if feeds:
            try:
                for i, logits in zip(slots, self.runner.run(feeds), strict=True):
                    responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(LOGITS, logits)])
            except Exception as exc:  # a server fault: every request of the batch gets it, the stub lives on
                for i in slots:
                    responses[i] = error_response(exc, self.name)
        return responses
