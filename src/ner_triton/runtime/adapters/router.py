"""Triton python-backend adapter of ``ner_route_<variant>``: one BERT call per length in the batch (BLS).

The logic is ner_triton.runtime.router. The calls of one batch go out together (async BLS) and the BERT
step's own batcher and instances run them; an error of the BERT step reaches the requests of that call with
its status code (bad input stays INVALID_ARG, a full queue UNAVAILABLE), the other calls are unaffected.
"""

import asyncio
import json

import triton_python_backend_utils as pb_utils

from ner_triton.errors import CapacityError, InvalidInputError
from ner_triton.runtime.adapters.responses import error_response
from ner_triton.runtime.router import check_feed, plan, split, stack
from ner_triton.schema import LOGITS


def _bert_error(error):
    """The BERT step's error as the exception error_response maps back to the same status code."""
    code = error.code() if hasattr(error, "code") else None
    message = f"the BERT step answered: {error.message()}"
    if code == pb_utils.TritonError.INVALID_ARG:
        return InvalidInputError(message)
    if code == pb_utils.TritonError.UNAVAILABLE:
        return CapacityError(message)
    return RuntimeError(message)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.name = config.get("name", "ner_route")
        self.target = params["target"]
        self.max_rows = int(params["max_rows"])
        self.names = [i["name"] for i in config["input"]]
        # logits back in CPU memory whatever device the BERT step runs on (a TensorRT engine: GPU)
        self.memory = {}
        if hasattr(pb_utils, "PreferredMemory"):
            self.memory["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)

    async def _call(self, feeds, rows):
        inputs = [pb_utils.Tensor(name, array) for name, array in stack(feeds, self.names).items()]
        request = pb_utils.InferenceRequest(
            model_name=self.target, requested_output_names=[LOGITS], inputs=inputs, **self.memory
        )
        response = await request.async_exec()
        if response.has_error():
            raise _bert_error(response.error())
        return split(pb_utils.get_output_tensor_by_name(response, LOGITS).as_numpy(), rows)

    async def execute(self, requests):
        responses = [None] * len(requests)
        feeds, shapes = {}, {}
        for i, request in enumerate(requests):
            try:
                feed = {}
                for name in self.names:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is not None:
                        feed[name] = tensor.as_numpy()
                shapes[i] = check_feed(feed, self.names)
                feeds[i] = feed
            except InvalidInputError as exc:
                responses[i] = error_response(exc, self.name)
        calls = plan(shapes, self.max_rows)
        results = await asyncio.gather(
            *(self._call([feeds[i] for i in call], [shapes[i][0] for i in call]) for call in calls),
            return_exceptions=True,
        )
        for call, result in zip(calls, results, strict=True):
            for n, i in enumerate(call):
                if isinstance(result, BaseException):  # this call's requests only; the stub lives on
                    responses[i] = error_response(result, self.name)
                else:
                    responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(LOGITS, result[n])])
        return responses
