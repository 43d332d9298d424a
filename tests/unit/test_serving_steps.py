"""The python-backend steps on numpy arrays, without Triton: windows, validation, decoding."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ner_triton.alignment import encode_texts, encode_windows
from ner_triton.decoding import Entity, best_labels, decode_entities, spans_to_token_tags
from ner_triton.errors import InvalidInputError
from ner_triton.labels import LabelMap
from ner_triton.modeling import load_tokenizer
from ner_triton.runtime.bert import BertRunner, length_groups
from ner_triton.runtime.session import onnx_session
from ner_triton.runtime.slots import Activity
from ner_triton.runtime.steps import Limits, Postprocessor, Preprocessor, decode_texts
from ner_triton.schema import ATTENTION_MASK, CASING_IDS, INPUT_IDS, LOGITS, OWNED, TEXT_INDEX
from support import TinyBuild

LABELS = LabelMap(("O", "B-LOC", "I-LOC", "B-PER", "I-PER"))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return load_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="module")
def pre(tiny_model_dir: Path) -> Preprocessor:
    return Preprocessor(tiny_model_dir, Limits(max_length=16, stride=4, max_windows=64))


def _texts(*items: bytes | str) -> np.ndarray:
    return np.array([i.encode() if isinstance(i, str) else i for i in items], dtype=np.object_)


def test_short_text_gives_one_window_equal_to_plain_encoding(tokenizer: Any) -> None:
    text = "Maria Lindqvist visited Madrid."
    (window,) = encode_windows(tokenizer, text, 128, 32)
    assert window.encoding == encode_texts(tokenizer, [text], 128)[0]
    assert window.owned == [False, *[True] * (len(window.encoding) - 2), False]


@pytest.mark.parametrize(("max_length", "stride"), [(8, 0), (8, 3), (16, 4), (32, 10)])
def test_every_token_is_owned_by_exactly_one_window(tokenizer: Any, max_length: int, stride: int) -> None:
    text = " ".join(f"word{i} Berlin" for i in range(40))
    windows = encode_windows(tokenizer, text, max_length, stride)
    assert len(windows) > 1 and all(len(w.encoding) <= max_length for w in windows)
    owned = [off for w in windows for off, o in zip(w.encoding.offsets, w.owned, strict=True) if o]
    plain = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    assert owned == [tuple(o) for o in plain]


def test_preprocess_outputs_windows_of_every_text(pre: Preprocessor) -> None:
    out = pre(_texts("Paris", "word " * 30 + "Berlin"))
    n = out[INPUT_IDS].shape[0]
    assert n > 2 and out[TEXT_INDEX].tolist() == [0] + [1] * (n - 1)
    assert out[INPUT_IDS].shape == out[ATTENTION_MASK].shape == out[CASING_IDS].shape == out[OWNED].shape
    assert out[INPUT_IDS].shape[1] <= 16 and out[INPUT_IDS].dtype == np.int64


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_texts(""), "empty or whitespace"),
        (_texts("ok", " \t"), "text 1 is empty"),
        (_texts(b"\xff"), "not valid UTF-8"),
        (_texts("a\x07b"), "control character U+0007"),
        (_texts("a" * 101), "may hold 100 (max_text_bytes)"),
        (np.array([], dtype=np.object_), "send at least one text"),
        (np.array([[b"a"]], dtype=np.object_), "shape [n]"),
        (np.array([1, 2]), "BYTES"),
        (_texts(*["a"] * 5), "the limit is 4"),
    ],
)
def test_bad_texts_get_a_message_naming_the_problem(raw: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        decode_texts(raw, Limits(max_texts=4, max_text_bytes=100))


def test_too_many_windows_is_rejected(tiny_model_dir: Path) -> None:
    step = Preprocessor(tiny_model_dir, Limits(max_length=8, stride=0, max_windows=3))
    with pytest.raises(InvalidInputError, match="windows"):
        step(_texts("word " * 40))


def test_decode_entities_merges_words_and_slices_text(tokenizer: Any) -> None:
    text = "Angela Merkel went to New York"
    enc = encode_texts(tokenizer, [text], 64)[0]
    tags = {
        text.index(w): t for w, t in [("Angela", "B-PER"), ("Merkel", "I-PER"), ("New", "B-LOC"), ("York", "I-LOC")]
    }
    logits = np.full((len(enc), len(LABELS)), -5.0, np.float32)
    for pos, (s, _) in enumerate(enc.offsets):
        logits[pos, LABELS.label2id[tags.get(s, "O") if enc.word_ids[pos] is not None else "O"]] = 5.0
    ents = decode_entities(text, logits, enc.offsets, enc.word_ids, LABELS)
    assert [(e.entity, e.word) for e in ents] == [("PER", "Angela Merkel"), ("LOC", "New York")]
    assert all(0.99 < e.score <= 1.0 for e in ents)


def test_lenient_decoding_starts_entities_at_stray_inside_tags() -> None:
    offsets = [(0, 0), (0, 1), (2, 3), (4, 5), (0, 0)]
    word_ids = [None, 0, 1, 2, None]
    logits = np.full((5, len(LABELS)), -5.0, np.float32)
    for pos, tag in [(1, "I-PER"), (2, "I-LOC"), (3, "I-LOC")]:
        logits[pos, LABELS.label2id[tag]] = 5.0
    ents = decode_entities("a b c", logits, offsets, word_ids, LABELS)
    assert [(e.entity, e.start, e.end) for e in ents] == [("PER", 0, 1), ("LOC", 2, 5)]


def test_spans_to_token_tags() -> None:
    ents = [Entity("PER", 0, 13, "Angela Merkel", 1.0)]
    assert spans_to_token_tags(ents, [0, 7, 14], [6, 13, 18]) == ["B-PER", "I-PER", "O"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=300), seed=st.integers(0, 99)
)
def test_random_unicode_spans_always_slice_the_original_text(pre: Preprocessor, text: str, seed: int) -> None:
    if not text.strip():
        with pytest.raises(InvalidInputError):
            pre(_texts(text))
        return
    tensors = pre(_texts(text))
    rng = np.random.default_rng(seed)
    tensors[LOGITS] = rng.normal(size=(*tensors[INPUT_IDS].shape, len(LABELS))).astype(np.float32)
    (payload,) = Postprocessor(LABELS)(_texts(text), tensors)
    for e in json.loads(payload):
        assert 0 <= e["start"] < e["end"] <= len(text)
        assert text[e["start"] : e["end"]] == e["word"]


def test_length_groups_bound_padding_and_keep_every_request() -> None:
    shapes = [(1, 5), (1, 40), (1, 6), (2, 38), (1, 120), (1, 5)]
    groups = length_groups(shapes, 0.25)
    assert sorted(i for g in groups for i in g) == list(range(len(shapes)))
    for g in groups:
        longest, real = max(shapes[i][1] for i in g), sum(shapes[i][0] * shapes[i][1] for i in g)
        assert sum(shapes[i][0] for i in g) * longest <= 1.25 * real
    assert [sorted(g) for g in groups] == [[0, 2, 5], [1, 3], [4]]
    assert length_groups(shapes, float("inf")) == [[0, 5, 2, 3, 1, 4]]


@pytest.mark.slow
def test_bert_runner_gives_each_request_the_logits_of_running_it_alone(tiny_build: TinyBuild) -> None:
    runner = BertRunner(tiny_build.artifacts / "onnx" / "model_fp32.onnx", threads=1)
    rng = np.random.default_rng(0)
    feeds = []
    for rows, length in [(1, 7), (2, 30), (1, 12), (3, 9)]:
        ids = rng.integers(1000, 2000, size=(rows, length)).astype(np.int64)
        feeds.append({INPUT_IDS: ids, ATTENTION_MASK: np.ones_like(ids), CASING_IDS: np.ones_like(ids)})
    together = runner.run(feeds)
    for feed, logits in zip(feeds, together, strict=True):
        (alone,) = runner.run([feed])
        assert logits.shape == (*feed[INPUT_IDS].shape, alone.shape[-1])
        np.testing.assert_allclose(logits, alone, atol=1e-4)
    # in slices of at most 32 padded positions per ONNX Runtime run (max_run_tokens), shrinking the arena after
    # each run above 16 positions: the same logits
    sliced = BertRunner(
        tiny_build.artifacts / "onnx" / "model_fp32.onnx", threads=1, max_run_tokens=32, shrink_above=16
    )
    for logits, small in zip(together, sliced.run(feeds), strict=True):
        np.testing.assert_allclose(small, logits, atol=1e-4)


def test_bert_runner_widens_only_while_no_other_instance_runs(tiny_build: TinyBuild, tmp_path: Path) -> None:
    """``threads_alone``: a batch that starts while no other instance is running one runs on the wider session,
    with the same logits (and label ids); the bulk lane (``widen=False``) never does."""
    path = tiny_build.artifacts / "onnx" / "model_fp32.onnx"
    other = Activity("model", tmp_path, rescan_s=0)
    runner = BertRunner(path, threads=1, threads_alone=2, activity=Activity("model", tmp_path, rescan_s=0))
    ids = np.random.default_rng(1).integers(1000, 2000, size=(2, 11)).astype(np.int64)
    feed = {INPUT_IDS: ids, ATTENTION_MASK: np.ones_like(ids), CASING_IDS: np.ones_like(ids)}
    (wide,) = runner.run([feed])
    assert runner.runs_alone == 1
    with other.running():  # another instance is busy: one thread
        (narrow,) = runner.run([feed])
    assert runner.runs_alone == 1
    np.testing.assert_allclose(wide, narrow, atol=1e-4)
    runner.predict([feed], widen=False)
    assert runner.runs_alone == 1
    ((best, _),) = runner.predict([feed])
    assert runner.runs_alone == 2 and (best == wide.argmax(-1)).all()
    assert BertRunner(path, threads=2, threads_alone=2, activity=other).alone is None  # no wider session to take


def test_server_sessions_spin_only_during_a_run(tiny_build: TinyBuild, tmp_path: Path) -> None:
    """The BERT step's sessions stop their threads spinning when a run returns (the cores go to the server and the
    client between requests); the in-process peers keep ONNX Runtime's default (spinning between runs too)."""
    path = tiny_build.artifacts / "onnx" / "model_fp32.onnx"
    runner = BertRunner(path, threads=1, threads_alone=2, activity=Activity("model", tmp_path, rescan_s=0))
    assert runner.alone is not None
    for session in (runner.session, runner.alone):
        assert session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(Exception, match="force_spinning_stop"):  # not set: ONNX Runtime's default
        onnx_session(path, 2).get_session_options().get_session_config_entry("session.force_spinning_stop")


def test_best_labels_is_the_softmax_argmax_and_its_probability() -> None:
    """:func:`best_labels` skips the full softmax; the label ids and probabilities are the softmax's."""
    logits = (np.random.default_rng(3).standard_normal((4, 17, 9)) * 6).astype(np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs = e / e.sum(-1, keepdims=True)  # the full softmax, as a reference
    best, scores = best_labels(logits)
    assert (best == probs.argmax(-1)).all() and scores.dtype == np.float32
    np.testing.assert_allclose(scores, probs.max(-1), rtol=1e-6)


PARITY_TEXTS = [
    "Maria Lindqvist visited Madrid.",
    "The U.K. and Peru talked with Globex Corp in Madrid on 2024-03-14.",
    "  leading spaces,\ttabs\nand new lines  ",
    "Café Zürich – naïve résumé ﬁnance ÉCOLE",
    "北京 and 東京 are capitals; emoji 🙂 too",
    "x" * 300 + " " + " ".join(f"w{i}" for i in range(200)),
]


@pytest.mark.parametrize("text", PARITY_TEXTS)
@pytest.mark.parametrize(("max_length", "stride"), [(16, 4), (128, 32)])
def test_runtime_tokenizer_gives_the_windows_transformers_gives(
    tiny_model_dir: Path, tokenizer: Any, text: str, max_length: int, stride: int
) -> None:
    """The tokenizer step loads tokenizer.json with `tokenizers` alone; it must cut the same windows as the
    transformers tokenizer that training and evaluation use."""
    from ner_triton.runtime.tokenizer import TokenizerFile

    runtime = TokenizerFile(tiny_model_dir)
    assert (runtime.cls_token_id, runtime.sep_token_id) == (tokenizer.cls_token_id, tokenizer.sep_token_id)
    assert encode_windows(runtime, text, max_length, stride) == encode_windows(tokenizer, text, max_length, stride)


def test_runtime_tokenizer_names_a_missing_tokenizer_file(tmp_path: Path) -> None:
    from ner_triton.errors import ModelLoadError
    from ner_triton.runtime.tokenizer import TokenizerFile

    with pytest.raises(ModelLoadError, match=r"tokenizer.json is missing.*make build"):
        TokenizerFile(tmp_path)


def test_runtime_tokenizer_takes_special_tokens_from_the_tokenizer_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    """transformers 5 writes the special tokens only into tokenizer_config.json: that file names them."""
    import shutil

    from ner_triton.runtime.tokenizer import TokenizerFile

    shutil.copy2(tiny_model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"cls_token": "[SEP]", "sep_token": "[CLS]"}))
    swapped = TokenizerFile(tmp_path)
    plain = TokenizerFile(tiny_model_dir)
    assert (swapped.cls_token_id, swapped.sep_token_id) == (plain.sep_token_id, plain.cls_token_id)
