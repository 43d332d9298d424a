"""The equal-shape path on the real server: BERT steps run like Triton's C++ backends (onnxruntime, TensorRT).

Those backends take no ragged batches: Triton's dynamic batcher merges only requests whose tensors have equal
shapes. The tokenizer step therefore pads every request to a length bucket. Here the local python BERT step is
configured the same way (``RepositorySettings.equal_shapes``: no ``allow_ragged_batch``, bucket padding), with
a 20 ms queue delay so that batching does not depend on how fast this machine is, and 16 closed-loop clients
send one sentence per request:

* sentences of one bucket batch (2 or more per execution on average here, where the tiny model's BERT step
  is not the bottleneck; the bench's ``triton_equal_shapes_grpc`` peer measures the real model);
* sentences with lengths spread like CoNLL-2003's test split (58% within 16 tokens, 26% within 32, 15% within
  64, 1% longer) batch less: Triton's dynamic batcher closes a batch at the first queued request of another
  shape, so batches are bounded by runs of one bucket in arrival order, not by the queue's depth
  (docs/serving.md, "Equal shapes"). The padding the buckets cost is measured with the tokenizer step's code.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from ner_triton.bench.peers import run_grpc
from ner_triton.repository.install import install_artifacts, served_settings
from ner_triton.repository.model_configs import layout_settings, parse_pbtxt
from ner_triton.repository.render import write_configs
from ner_triton.runtime.steps import Preprocessor
from ner_triton.schema import INPUT_IDS, PREPROCESS
from ner_triton.serving.server import ServerSettings, TritonServer
from ner_triton.variants import Layout
from support import TinyBuild

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORDS = ["Maria", "Lindqvist", "visited", "Madrid", "and", "met", "ACME", "officials", "in", "Oslo", "on", "Monday"]
# Words per sentence drawn so that sub-token lengths fall into the buckets like CoNLL-2003 test sentences.
LENGTHS = [(4, 12, 0.58), (15, 28, 0.26), (31, 58, 0.15), (64, 100, 0.01)]


def conll_like_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        low, high, _share = rng.choices(LENGTHS, weights=[w for *_, w in LENGTHS])[0]
        out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))))
    return out


@pytest.fixture(scope="module")
def equal_shape_server(tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("equal_shapes")
    base = served_settings(tiny_build.artifacts)
    settings = replace(base, equal_shapes=True, batching=replace(base.batching, max_queue_delay_us=20_000))
    write_configs(settings, root / "repository")
    install_artifacts(settings, tiny_build.artifacts, root / "repository")
    server = ServerSettings.on_free_ports(root / "repository", root / "state")
    with TritonServer(server):
        yield server, settings


def test_the_equal_shape_configs_are_the_c_backends_rules(equal_shape_server) -> None:  # type: ignore[no-untyped-def]
    server, settings = equal_shape_server
    bert = parse_pbtxt((server.repository / settings.served.triton_name / "config.pbtxt").read_text())
    assert not any(i.allow_ragged_batch for i in bert.input), "C++ backends take no ragged batches"
    pre = parse_pbtxt((server.repository / PREPROCESS / "config.pbtxt").read_text())
    assert pre.parameters["buckets"].string_value == ",".join(map(str, settings.buckets))
    assert layout_settings(settings, Layout.ONNXRUNTIME).limits.buckets == settings.buckets, "same as the NGC layout"


def _avg_batch(server: ServerSettings, model: str, bert: str, texts: list[str]) -> dict[str, float]:
    """The BERT step's batching while 16 clients send ``texts`` one per request (the bench's gRPC runner)."""
    run = run_grpc(server.grpc_url, model, bert, texts, concurrency=16)
    assert run.triton is not None
    return run.triton["models"][bert]  # type: ignore[no-any-return]


def test_one_bucket_batches_and_mixed_lengths_batch_less(  # type: ignore[no-untyped-def]
    equal_shape_server,
) -> None:
    server, settings = equal_shape_server
    same = [" ".join(random.Random(i).choice(WORDS) for _ in range(8)) for i in range(320)]  # all in bucket 16
    model, bert = settings.served.ensemble_name(None), settings.served.triton_name
    one_bucket = _avg_batch(server, model, bert, same)
    mixed = _avg_batch(server, model, bert, conll_like_texts(320))
    limits = layout_settings(settings, Layout.PYTHON).limits
    pre = Preprocessor(server.repository / PREPROCESS / "1" / "tokenizer", limits)
    texts = conll_like_texts(320)
    real = sum(len(pre.tokenizer.encode_plain(t).input_ids) + 2 for t in texts)
    padded = sum(pre(np.array([t.encode()], dtype=np.object_))[INPUT_IDS].shape[1] for t in texts)
    overhead = 100 * (padded - real) / real
    print(
        f"equal shapes, 16 clients: avg BERT batch {one_bucket['avg_batch_size']} (one bucket), "
        f"{mixed['avg_batch_size']} (CoNLL-like mix); bucket padding +{overhead:.0f}% tokens"
    )
    assert one_bucket["inferences"] == len(same) and mixed["inferences"] == len(texts)
    assert one_bucket["avg_batch_size"] >= 2, one_bucket
    assert mixed["avg_batch_size"] < one_bucket["avg_batch_size"], "mixed shapes break batches (head of the queue)"
    assert 0 < overhead < 150, "buckets pad, but less than padding to the longest bucket would"
