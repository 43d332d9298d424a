"""Triton python-backend adapter of ``ner`` on the local CPU server: the whole pipeline in one model.

The logic is ner_triton.runtime.fused.FusedNer; TEXT ``[batch, 1]`` in, ENTITIES ``[batch, 1]`` out, requests
merged by Triton's dynamic batcher. A bad request gets its own error response; the others of the batch run.
"""

import json
import os
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ner_triton.runtime.fused import FusedNer
from ner_triton.runtime.limits import Limits
from ner_triton.schema import ENTITIES, TEXT


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.ner = FusedNer(
            Path(args["model_repository"]) / args["model_version"],
            Limits.from_parameters(params),
            threads=int(os.environ.get("NER_ORT_THREADS", params.get("threads", "1"))),
            max_padding=float(params.get("max_padding", "0.25")),
            spinning=params.get("spinning", "1") != "0",
        )
        self.logger = pb_utils.Logger

    def execute(self, requests):
        try:
            results = self.ner([pb_utils.get_input_tensor_by_name(r, TEXT).as_numpy() for r in requests])
        except Exception as exc:  # never let one batch take the stub down
            self.logger.log_error(f"ner: {exc!r}")
            error = pb_utils.TritonError(f"internal error: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for result in results:
            if isinstance(result, Exception):
                error = pb_utils.TritonError(f"invalid input: {result}")
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(ENTITIES, result)]))
        return responses
