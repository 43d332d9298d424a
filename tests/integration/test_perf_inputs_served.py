"""Every request of the perf_analyzer input file that ner-perf-inputs writes is one the real ensemble serves.

The file targets the ensemble interface (TEXT ``[n]``): ``ner`` on the NGC and GPU layouts, where perf_analyzer
and Model Analyzer run. On the local python layout ``ner`` is the one-step batching model (TEXT ``[n, 1]``), so
the test sends the entries to the same ensemble there, ``ner_int8``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from ner_triton.deploy.perf import INPUTS_FILE, main
from ner_triton.schema import ENTITIES, TEXT
from ner_triton.serving.server import ServerSettings

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("per_request", [1, 4])
def test_each_input_entry_is_a_request_the_ensemble_serves(
    server: ServerSettings, tmp_path: Path, per_request: int
) -> None:
    data = ROOT / "loadtest" / "data" / "sentences.txt"
    assert main(["--data", str(data), "--output", str(tmp_path), "--texts-per-request", str(per_request)]) == 0
    entries = json.loads((tmp_path / INPUTS_FILE).read_text(encoding="utf-8"))["data"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for entry in entries:
            # As perf_analyzer sends it: BYTES content as UTF-8 strings, in the entry's shape.
            content = np.array([t.encode("utf-8") for t in entry[TEXT]["content"]], dtype=np.object_)
            tensor = grpcclient.InferInput(TEXT, entry[TEXT]["shape"], "BYTES")
            tensor.set_data_from_numpy(content.reshape(entry[TEXT]["shape"]))
            result = client.infer("ner_int8", [tensor])
            entities = result.as_numpy(ENTITIES)
            assert entities is not None and len(entities) == per_request
            assert all(isinstance(json.loads(e), list) for e in entities)
    finally:
        client.close()
    assert len(entries) == 70 // per_request
