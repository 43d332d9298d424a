"""Triton python-backend adapter of ``ner_postprocess``; the logic is ner_triton.runtime.steps.Postprocessor.

It exports the output half of the quality signals (entities per type, their scores;
ner_triton.runtime.quality_metrics) under its own model name, unless switched off (``NER_QUALITY_METRICS=0``)."""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ner_triton.labels import LabelMap
from ner_triton.runtime.adapters.responses import error_response
from ner_triton.runtime.quality_metrics import per_text, quality_metrics
from ner_triton.runtime.steps import Postprocessor
from ner_triton.schema import ENTITIES, LABELS_FILE, LOGITS, OFFSETS, OWNED, TEXT, TEXT_INDEX, WORD_IDS

TENSORS = (LOGITS, OFFSETS, WORD_IDS, OWNED, TEXT_INDEX)


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        self.step = Postprocessor(LabelMap.load(here / LABELS_FILE))
        config = json.loads(args["model_config"])
        self.name = config.get("name", "ner_postprocess")
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.quality = quality_metrics(args, params, self.step.labels.entity_types, inputs=False)

    def execute(self, requests):
        responses, answered = [], []
        for request in requests:
            try:
                text = pb_utils.get_input_tensor_by_name(request, TEXT).as_numpy()
                tensors = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in TENSORS}
                entities = self.step(text, tensors)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(ENTITIES, entities)]))
                answered.append((per_text(tensors, entities.size), entities))
            except Exception as exc:  # never let one request take the stub down
                responses.append(error_response(exc, self.name))
        if self.quality is not None and answered:
            self.quality.observe(answered)
        return responses

    def finalize(self):
        if self.quality is not None:
            self.quality.close()
