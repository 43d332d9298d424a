"""Triton python-backend adapter of ``ner`` on the local CPU server: the whole pipeline in one model.

The logic is ner_triton.runtime.fused.FusedNer; TEXT ``[batch, 1]`` in, ENTITIES ``[batch, 1]`` out, requests
merged by Triton's dynamic batcher. A batch of short requests only (``FusedNer.all_small``: none can reach the bulk
lane) returns its responses from ``execute``, all in one message to Triton; a batch with a larger request sends
each response through its request's sender as soon as it is ready (cheap requests first) and returns None - one
message per response, which costs: measured on the 2-core AVX-512 EPYC, an empty python model answered ~1.45x
more requests a second by returning them (docs/serving.md, "Responses"). A bad request gets its own error
response (INVALID_ARGUMENT; UNAVAILABLE when a large request finds no room); the others of the batch run.

Quality signals (ner_triton.runtime.quality_metrics) are on unless the config parameter ``quality_metrics`` or
the environment variable ``NER_QUALITY_METRICS`` is ``0`` (the environment wins); ``quality_flush_s`` sets how
often they reach the metrics port (default 2 s).
"""

import json
import os
from pathlib import Path

import triton_python_backend_utils as pb_utils

from ner_triton.cpus import available_cpus
from ner_triton.runtime.adapters.responses import error_response
from ner_triton.runtime.fused import FusedNer
from ner_triton.runtime.limits import Limits
from ner_triton.runtime.quality_metrics import quality_metrics
from ner_triton.schema import ENTITIES, TEXT

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def threads_alone(raw):
    """The ``threads_alone`` parameter: ``auto`` = the CPUs this stub may use, a count, or 0 (off)."""
    return available_cpus() if raw.strip().lower() == "auto" else int(raw)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.name = config.get("name", "ner")
        self.ner = FusedNer(
            Path(args["model_repository"]) / args["model_version"],
            Limits.from_parameters(params),
            threads=int(os.environ.get("NER_ORT_THREADS", params.get("threads", "1"))),
            max_padding=float(params.get("max_padding", "0.25")),
            spinning=params.get("spinning", "1") != "0",
            threads_alone=threads_alone(params.get("threads_alone", "0")),
        )
        self.quality = quality_metrics(
            args, params, self.ner.post.labels.entity_types, self.ner.pre.tokenizer.unk_token_id
        )
        self.ner.observer = self.quality

    def execute(self, requests):
        texts = [pb_utils.get_input_tensor_by_name(r, TEXT).as_numpy() for r in requests]
        if self.ner.all_small(texts):  # nothing to answer early: one message back to Triton for the whole batch
            return [self._response(result) for result in self._run_all(texts)]
        return self._send_each(requests, texts)

    def _run_all(self, texts):
        try:
            return self.ner(texts)
        except Exception as exc:  # never let one batch take the stub down; every request gets an answer
            if self.quality is not None:
                self.quality.reject(exc)
            return [exc] * len(texts)

    def _response(self, result):
        if isinstance(result, Exception):
            return error_response(result, self.name)
        return pb_utils.InferenceResponse([pb_utils.Tensor(ENTITIES, result)])

    def _send_each(self, requests, texts):
        """A batch with a request that may run in the bulk lane: each response goes out through its request's
        sender as soon as it is ready, so the short requests never wait for the long one."""
        senders = [r.get_response_sender() for r in requests]
        pending = set(range(len(requests)))

        def send(i, result):
            if i not in pending:  # one response per request, whatever happens
                return
            pending.discard(i)
            try:
                senders[i].send(self._response(result), flags=FINAL)
            except Exception as exc:  # a failed send (e.g. no shared memory for a big answer) fails this request only
                pb_utils.Logger.log_error(f"{self.name}: cannot send the response of request {i}: {exc!r}")
                try:
                    senders[i].send(error_response(exc, self.name), flags=FINAL)
                except Exception as again:
                    pb_utils.Logger.log_error(f"{self.name}: request {i} got no response: {again!r}")

        try:
            self.ner(texts, send)
        except Exception as exc:  # never let one batch take the stub down; every request gets an answer
            for i in sorted(pending):
                if self.quality is not None:
                    self.quality.reject(exc)
                send(i, exc)
        return None

    def finalize(self):
        if self.quality is not None:
            self.quality.close()
