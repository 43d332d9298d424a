"""The local repository on a real tritonserver: the one-step ``ner`` and the three-step ensembles - readiness,
entities, offsets, batching, per-request errors, F1 equal to the build's."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from ner_triton.bench.served_eval import evaluate_served, served_report_key
from ner_triton.client import AsyncNerClient, NerClient
from ner_triton.data import load_split
from ner_triton.errors import InputRejectedError, InvalidInputError, RequestRejectedError, ServiceUnavailableError
from ner_triton.record import BuildReport
from ner_triton.schema import LOGITS
from ner_triton.serving.server import ServerSettings
from support import TinyBuild

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENTENCES = [
    "ACME rejects Danish plan to import Swiss cheese.",
    "Maria Lindqvist",
    "The U.K. and Peru talked with Globex Corp in Madrid.",
    "OSLO 2024-03-14",
]


def test_server_and_every_model_are_ready(server: ServerSettings) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_ready()
    for name in ("ner", "ner_int8", "ner_int8_dynamic", "ner_fp32", "ner_preprocess", "ner_postprocess"):
        assert client.is_model_ready(name), name
    for name in ("ner_bert_int8", "ner_bert_int8_dynamic", "ner_bert_fp32"):
        assert client.is_model_ready(name), name


def test_ner_serves_the_builds_choice_exactly_like_its_ensemble(server: ServerSettings, tiny_build: TinyBuild) -> None:
    """``ner`` (one python model) and ``ner_<served>`` (three steps) run the same file: the same entities.

    One text per request, one request at a time: dynamic INT8 scales activations per batch, so texts batched
    with others may score slightly differently (the F1 test below bounds that)."""
    served = BuildReport.load(tiny_build.artifacts / "report.json").served.variant
    with NerClient(server.grpc_url) as fused, NerClient(server.grpc_url, model=f"ner_{served}") as ensemble:
        a = [fused.extract([t])[0] for t in SENTENCES]
        b = [ensemble.extract([t])[0] for t in SENTENCES]
    assert [[(e.entity, e.start, e.end) for e in x] for x in a] == [[(e.entity, e.start, e.end) for e in x] for x in b]
    assert all(abs(e.score - f.score) < 1e-4 for x, y in zip(a, b, strict=True) for e, f in zip(x, y, strict=True))


def test_known_sentences_get_entities_that_slice_the_text(server: ServerSettings) -> None:
    with NerClient(server.grpc_url) as client:
        results = client.extract(SENTENCES)
    assert len(results) == len(SENTENCES)
    # The tiny model was trained on exactly these documents: it finds their names.
    found = {(e.entity, e.word) for ents in results for e in ents}
    assert any(kind == "PER" and word.startswith("Maria") for kind, word in found), found
    assert any(kind == "LOC" for kind, _ in found), found
    for text, ents in zip(SENTENCES, results, strict=True):
        for e in ents:
            assert text[e.start : e.end] == e.word
            assert 0.0 < e.score <= 1.0 and e.entity in {"LOC", "MISC", "ORG", "PER"}


def test_int8_and_fp32_ensembles_agree_on_spans(server: ServerSettings) -> None:
    with NerClient(server.grpc_url, model="ner_int8") as int8, NerClient(server.grpc_url, model="ner_fp32") as fp32:
        a, b = int8.extract(SENTENCES), fp32.extract(SENTENCES)
    assert [[(e.start, e.end) for e in x] for x in a] == [[(e.start, e.end) for e in x] for x in b]


@pytest.mark.parametrize("model", ["ner", "ner_int8"])
def test_long_text_is_windowed_not_truncated(server: ServerSettings, model: str) -> None:
    text = " ".join(["Maria Lindqvist visited Madrid ."] * 60)  # ~300 tokens: 3+ windows of 128
    with NerClient(server.grpc_url, model=model) as client:
        (ents,) = client.extract([text])
    assert max(e.end for e in ents) > len(text) * 0.9, "entities at the end of a long text are found"
    assert all(text[e.start : e.end] == e.word for e in ents)


@pytest.mark.parametrize(("model", "batched"), [("ner", "ner"), ("ner_int8", "ner_bert_int8")])
def test_concurrent_texts_of_different_lengths_are_batched_together(
    server: ServerSettings, model: str, batched: str
) -> None:
    texts = [" ".join(["word"] * n) + " Berlin" for n in range(1, 41)]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = client.get_inference_statistics(batched, as_json=True)["model_stats"][0]
    with ThreadPoolExecutor(16) as pool, NerClient(server.grpc_url, model=model) as ner:
        list(pool.map(lambda t: ner.extract([t]), texts * 4))
    after = client.get_inference_statistics(batched, as_json=True)["model_stats"][0]
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == len(texts) * 4
    assert executions < inferences, "requests of different lengths were never batched together"


@pytest.mark.parametrize("model", ["ner", "ner_int8"])
def test_async_client(server: ServerSettings, model: str) -> None:
    async def run() -> list[list[str]]:
        async with AsyncNerClient(server.grpc_url, model=model) as client:
            results = await asyncio.gather(*(client.extract([s]) for s in SENTENCES))
        return [[e.word for e in r[0]] for r in results]

    words = asyncio.run(run())
    with NerClient(server.grpc_url, model=model) as client:
        assert words == [[e.word for e in ents] for ents in client.extract(SENTENCES)]


def _raw_infer(server: ServerSettings, model: str, names: str, data: np.ndarray, dtype: str) -> object:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensors = []
    for name in names.split(","):
        tensors.append(grpcclient.InferInput(name, list(data.shape), dtype))
        tensors[-1].set_data_from_numpy(data)
    try:
        return client.infer(model, tensors)
    except grpcclient.InferenceServerException as exc:
        return exc


BERT_INPUTS = "input_ids,attention_mask,casing_ids"
TEXT_CASES = {  # TEXT as 1-D; sent as [n] to an ensemble and as [n, 1] to the batching one-step ``ner``
    "empty string": (np.array([b""], dtype=np.object_), "BYTES", "empty or whitespace"),
    "whitespace": (np.array([b" \n\t "], dtype=np.object_), "BYTES", "empty or whitespace"),
    "invalid utf-8": (np.array([b"Paris \xff\xfe"], dtype=np.object_), "BYTES", "not valid UTF-8"),
    "control char": (np.array([b"Paris\x00"], dtype=np.object_), "BYTES", "control character"),
    "over-long text": (np.array([b"a " * 60_000], dtype=np.object_), "BYTES", "may hold 100000 (max_text_bytes)"),
    "wrong dtype": (np.array([1, 2], dtype=np.int32), "INT32", "data-type"),
}
BAD_REQUESTS = {
    **{f"ensemble {k}": ("ner_int8", "TEXT", d, t, m) for k, (d, t, m) in TEXT_CASES.items()},
    **{f"ner {k}": ("ner", "TEXT", d.reshape(-1, 1), t, m) for k, (d, t, m) in TEXT_CASES.items()},
    "ensemble wrong shape": ("ner_int8", "TEXT", np.array([[b"Paris"]], dtype=np.object_), "BYTES", "shape"),
    "ner wrong shape": ("ner", "TEXT", np.array([b"Paris"], dtype=np.object_), "BYTES", "shape"),
    "ner batch too big": ("ner", "TEXT", np.array([[b"Paris"]] * 65, dtype=np.object_), "BYTES", "batch"),
    "bert wrong rank": ("ner_bert_int8", BERT_INPUTS, np.ones((2, 3, 4), np.int64), "INT64", "shape"),
    "bert wrong dtype": ("ner_bert_int8", BERT_INPUTS, np.ones((2, 3), np.int32), "INT32", "data-type"),
    "bert batch too big": ("ner_bert_int8", BERT_INPUTS, np.ones((65, 3), np.int64), "INT64", "batch"),
    "unknown model": ("no_such_model", "TEXT", np.array([b"Paris"], dtype=np.object_), "BYTES", "unknown model"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_fail_alone_while_good_ones_in_flight_succeed(server: ServerSettings, case: str) -> None:
    model, name, data, dtype, message = BAD_REQUESTS[case]
    with ThreadPoolExecutor(8) as pool, NerClient(server.grpc_url) as client:
        good = [pool.submit(client.extract, [s]) for s in SENTENCES * 2]
        bad = pool.submit(_raw_infer, server, model, name, data, dtype)
        error = bad.result(timeout=60)
        assert isinstance(error, grpcclient.InferenceServerException), f"{case} was accepted"
        assert message.lower() in error.message().lower(), error.message()
        assert all(len(f.result(timeout=60)) == 1 for f in good)
    with NerClient(server.grpc_url) as client:
        assert client.is_ready()


STATUS_CASES = {  # model, input names, data, dtype -> gRPC status and HTTP status
    "bad input to ner": ("ner", "TEXT", np.array([[b"Paris \xff"]], dtype=np.object_), "BYTES", "INVALID_ARGUMENT",
                         400),
    "over budget to ner": ("ner", "TEXT", np.array([[b"word " * 20_000]] * 3, dtype=np.object_), "BYTES",
                           "INVALID_ARGUMENT", 400),
    "bad input to a step": ("ner_preprocess", "TEXT", np.array([b""], dtype=np.object_), "BYTES", "INVALID_ARGUMENT",
                            400),
    "bad ids to the bert step": ("ner_bert_int8", BERT_INPUTS, np.full((1, 4), -3, np.int64), "INT64",
                                 "INVALID_ARGUMENT", 400),
    # logits that do not fit the texts: the postprocess step fails inside - a server fault, not the client's
    "server fault": ("ner_postprocess", "", None, "", "INTERNAL", 500),
}  # fmt: skip


def _fault_inputs(module: object) -> list[object]:
    arrays = {
        "TEXT": (np.array([b"Paris"], dtype=np.object_), "BYTES"),
        LOGITS: (np.zeros((1, 3, 2), np.float32), "FP32"),
        "OFFSETS": (np.zeros((1, 5, 2), np.int64), "INT64"),
        "WORD_IDS": (np.zeros((1, 5), np.int64), "INT64"),
        "OWNED": (np.ones((1, 5), np.bool_), "BOOL"),
        "TEXT_INDEX": (np.array([0], np.int64), "INT64"),
    }
    tensors = []
    for name, (data, dtype) in arrays.items():
        tensors.append(module.InferInput(name, list(data.shape), dtype))  # type: ignore[attr-defined]
        tensors[-1].set_data_from_numpy(data)
    return tensors


@pytest.mark.parametrize("case", sorted(STATUS_CASES))
def test_bad_input_is_invalid_argument_and_400_and_a_server_fault_is_internal_and_500(
    server: ServerSettings, case: str
) -> None:
    import tritonclient.http as httpclient

    model, names, data, dtype, grpc_status, http_status = STATUS_CASES[case]
    for module, url in ((grpcclient, server.grpc_url), (httpclient, server.http_url.removeprefix("http://"))):
        client = module.InferenceServerClient(url)
        if data is None:
            tensors = _fault_inputs(module)
        else:
            tensors = []
            for name in names.split(","):
                tensors.append(module.InferInput(name, list(data.shape), dtype))
                tensors[-1].set_data_from_numpy(data)
        with pytest.raises(module.InferenceServerException) as caught:
            client.infer(model, tensors)
        client.close()
        status = str(caught.value.status())
        if module is grpcclient:
            assert status == f"StatusCode.{grpc_status}", (case, status, caught.value.message())
        else:
            assert status == str(http_status), (case, status, caught.value.message())
    with NerClient(server.grpc_url) as client:
        assert client.is_ready()


def test_client_maps_invalid_argument_to_input_rejected_and_splits_over_budget_lists(server: ServerSettings) -> None:
    long_text = "Maria visited Madrid . " + "the cheese " * 900  # ~1,800 sub-tokens: one text fits the budget
    with NerClient(server.grpc_url, max_bytes_per_request=10**6) as client:
        with pytest.raises(InputRejectedError, match=r"not valid UTF-8|control") as caught:
            client.extract(["Paris\x00"])
        assert isinstance(caught.value, InvalidInputError)
        # 8 such texts make one request far over max_tokens: the client halves it until each part fits
        results = client.extract([long_text] * 8)
    assert len(results) == 8 and all(r == results[0] for r in results)


def test_client_errors_are_clear(server: ServerSettings) -> None:
    with NerClient(server.grpc_url) as client, pytest.raises(RequestRejectedError, match=r"not valid UTF-8|control"):
        client.extract(["ok", "bad \x00"])
    with (
        NerClient(server.grpc_url, model="no_such_model") as client,
        pytest.raises(RequestRejectedError, match="no_such_model"),
    ):
        client.extract(["Paris"])
    with NerClient("127.0.0.1:1", timeout_s=5) as client, pytest.raises(ServiceUnavailableError, match="make serve"):
        client.extract(["Paris"])


def test_cli_prints_json(server: ServerSettings) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ner-client"), "--url", server.grpc_url, "--json", SENTENCES[1]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (item,) = json.loads(proc.stdout)
    assert item["text"] == SENTENCES[1]
    assert all(set(e) == {"entity", "start", "end", "word", "score"} for e in item["entities"])


@pytest.mark.parametrize("model", ["ner", "ner_int8"])
def test_f1_through_the_server_equals_the_in_process_f1(
    server: ServerSettings, tiny_build: TinyBuild, conll_dir: Path, model: str
) -> None:
    test = load_split(str(conll_dir), "test")
    served = evaluate_served(server.grpc_url, test, model=model, concurrency=8)
    report = BuildReport.load(tiny_build.artifacts / "report.json")
    key = served_report_key(model, report)
    assert served["sentences"] == len(test)
    assert abs(served["f1"] - report.f1(key)) <= 0.001, (served, report.variants[key])
    assert served["bert_inferences"] == len(test)
