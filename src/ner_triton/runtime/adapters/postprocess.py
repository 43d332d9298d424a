"""Triton python-backend adapter of ``ner_postprocess``; the logic is ner_triton.runtime.steps.Postprocessor."""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ner_triton.labels import LabelMap
from ner_triton.runtime.adapters.responses import error_response
from ner_triton.runtime.steps import Postprocessor
from ner_triton.schema import ENTITIES, LABELS_FILE, LOGITS, OFFSETS, OWNED, TEXT, TEXT_INDEX, WORD_IDS

TENSORS = (LOGITS, OFFSETS, WORD_IDS, OWNED, TEXT_INDEX)


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        self.step = Postprocessor(LabelMap.load(here / LABELS_FILE))
        self.name = json.loads(args["model_config"]).get("name", "ner_postprocess")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                text = pb_utils.get_input_tensor_by_name(request, TEXT).as_numpy()
                tensors = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in TENSORS}
                entities = self.step(text, tensors)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(ENTITIES, entities)]))
            except Exception as exc:  # never let one request take the stub down
                responses.append(error_response(exc, self.name))
        return responses
