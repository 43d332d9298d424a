"""Budgets: what one request, one dynamic batch and one ONNX Runtime run may cost (runtime.limits), the bulk
slots shared by a model's instances, and the client's splitting by budget."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ner_triton.client import OVER_BUDGET, _chunks, _halves
from ner_triton.errors import (
    BudgetExceededError,
    CapacityError,
    ConfigError,
    InputRejectedError,
    InvalidInputError,
    RequestRejectedError,
)
from ner_triton.runtime.limits import Limits
from ner_triton.runtime.slots import Activity, Slots
from ner_triton.runtime.steps import Preprocessor, decode_texts
from ner_triton.schema import ATTENTION_MASK, TEXT_INDEX
from support import TinyBuild


def _texts(*items: str | bytes) -> np.ndarray:
    return np.array([t.encode() if isinstance(t, str) else t for t in items], dtype=np.object_)


def test_the_request_s_bytes_are_budgeted_before_any_text_is_decoded() -> None:
    limits = Limits(max_text_bytes=100, max_request_bytes=250)
    assert decode_texts(_texts("a" * 100, "b" * 100), limits) == ["a" * 100, "b" * 100]
    with pytest.raises(BudgetExceededError, match=re.escape("300 bytes; one request may hold 250 (max_request_bytes)")):
        decode_texts(_texts("a" * 100, "b" * 100, b"\xff" * 100), limits)


def test_windows_and_tokens_are_counted_over_the_whole_request_not_per_text(tiny_model_dir: Path) -> None:
    # each text makes 3 windows of 8: alone every text fits, together they do not
    pre = Preprocessor(tiny_model_dir, Limits(max_length=8, stride=0, max_windows=8, max_tokens=1000))
    text = "word " * 17
    assert len(pre.encode_each([text, text])) == 2
    with pytest.raises(BudgetExceededError, match=r"make 9 windows .* may hold 8 \(max_windows\)"):
        pre.encode_each([text, text, text])
    with pytest.raises(BudgetExceededError, match="max_windows"):
        pre.encode([text, text, text])
    pre = Preprocessor(tiny_model_dir, Limits(max_length=8, stride=0, max_windows=64, max_tokens=40))
    with pytest.raises(BudgetExceededError, match=r"sub-tokens; one request may hold 40 \(max_tokens\)"):
        pre.encode_each([text, text])
    out = pre.encode([text])
    assert int(out[ATTENTION_MASK].sum()) <= 40 and out[TEXT_INDEX].tolist() == [0, 0, 0]


def test_budget_errors_are_invalid_input_and_name_the_setting() -> None:
    assert issubclass(BudgetExceededError, InvalidInputError)
    assert issubclass(InputRejectedError, RequestRejectedError) and issubclass(InputRejectedError, InvalidInputError)
    assert not issubclass(CapacityError, InvalidInputError)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_tokens": 0}, "positive"),
        ({"max_tokens": 100}, "max_tokens=100 must be >= max_length=128"),
        ({"max_batch_tokens": 4096}, "largest request could never be run"),
        ({"max_run_tokens": 64}, "max_run_tokens=64"),
        ({"bulk_slots": 0}, "positive"),
    ],
)
def test_inconsistent_budgets_are_refused(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Limits(**fields)


def test_budgets_travel_in_the_config_parameters() -> None:
    limits = Limits(max_request_bytes=1234, max_tokens=4096, max_batch_tokens=9000, bulk_tokens=512, bulk_slots=3)
    assert Limits.from_parameters(limits.to_parameters()) == limits


def test_bulk_slots_are_shared_by_processes_and_freed_when_one_dies(tmp_path: Path) -> None:
    slots = Slots("model-a", 2, tmp_path)
    first, second = slots.try_acquire(), slots.try_acquire()
    assert first is not None and second is not None and slots.try_acquire() is None
    assert Slots("model-b", 1, tmp_path).try_acquire() is not None  # another model has slots of its own
    first.release()
    # another process sees one free slot, takes it and dies holding it: the kernel frees it
    code = (
        "import sys; from pathlib import Path; from ner_triton.runtime.slots import Slots; "
        f"s = Slots('model-a', 2, Path({str(tmp_path)!r})); "
        "h = s.try_acquire(); sys.exit(0 if h is not None and s.try_acquire() is None else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    again = slots.try_acquire()
    assert again is not None and slots.try_acquire() is None
    again.release()
    second.release()


def test_client_chunks_by_texts_and_bytes_and_halves_only_over_budget_rejections() -> None:
    texts = ["a" * 10, "b" * 10, "c" * 10, "d" * 50, "e"]
    assert _chunks(texts, 64, 25) == [texts[0:2], texts[2:3], texts[3:4], texts[4:5]]
    assert _chunks(texts, 2, 1000) == [texts[0:2], texts[2:4], texts[4:5]]
    assert _chunks([], 2, 10) == []
    over = InputRejectedError(f"ner rejected the request (INVALID_ARGUMENT): invalid input: {OVER_BUDGET}: ...")
    assert _halves(texts, over) == (texts[:2], texts[2:])
    assert _halves(texts[:1], over) is None  # one text over budget cannot be split by the client
    assert _halves(texts, InputRejectedError("invalid input: text 1 is empty")) is None


@pytest.mark.slow
def test_fused_ner_admits_cheapest_first_answers_them_first_and_refuses_what_the_budgets_cannot_take(
    tiny_build: TinyBuild, tmp_path: Path
) -> None:
    from ner_triton.runtime.fused import FusedNer

    version = next(p for p in sorted((tiny_build.repository / "ner").iterdir()) if p.is_dir())
    limits = Limits(
        max_length=32, stride=8, max_tokens=200, max_batch_tokens=250, bulk_tokens=100, bulk_bytes=1000, bulk_slots=1
    )
    slots = Slots("fused-test", 1, tmp_path)
    ner = FusedNer(version, limits, threads=1, slots=slots)
    short = _texts("Maria visited Madrid.").reshape(-1, 1)
    bulk = _texts("Maria visited Madrid and " + "the cheese " * 40).reshape(-1, 1)  # 128 sub-tokens in windows of 32
    too_big = _texts("the cheese " * 120).reshape(-1, 1)
    sent: list[int] = []
    out = ner([bulk, short, too_big, short], lambda i, _: sent.append(i))
    assert isinstance(out[2], BudgetExceededError) and "max_tokens" in str(out[2])
    for i in (0, 1, 3):
        assert isinstance(out[i], np.ndarray) and out[i].shape == (1, 1)
    assert sent.index(1) < sent.index(0) and sent.index(3) < sent.index(0)  # the short ones did not wait

    # two bulk requests in one batch: the batch's token budget takes one, the other is told to retry
    out = ner([bulk, bulk, short])
    assert isinstance(out[2], np.ndarray)
    refused = [r for r in out[:2] if isinstance(r, CapacityError)]
    assert len(refused) == 1 and "max_batch_tokens" in str(refused[0])

    # the host's only bulk slot is held by another instance: bulk requests are refused at once, short ones run
    held = slots.try_acquire()
    assert held is not None
    out = ner([bulk, short])
    assert isinstance(out[0], CapacityError) and "bulk_tokens" in str(out[0]) and isinstance(out[1], np.ndarray)
    held.release()
    assert isinstance(ner([bulk])[0], np.ndarray)

    # one request over bulk_bytes (it takes the only slot before tokenizing; 160 sub-tokens) and a cheaper one over
    # bulk_tokens (128) in one batch: the slot passes from the first to the second, neither is refused by its batch
    spacious = _texts("the cheese " * 50 + " " * 700).reshape(-1, 1)
    roomy = Slots("fused-test-roomy", 1, tmp_path)
    ner = FusedNer(version, replace(limits, max_batch_tokens=400), threads=1, slots=roomy)
    out = ner([bulk, spacious])
    assert all(isinstance(r, np.ndarray) for r in out), out
    assert roomy.try_acquire() is not None, "every slot is released after the batch"


@pytest.mark.slow
@pytest.mark.parametrize("limits", [Limits(), Limits(max_length=32, stride=8, max_tokens=400, bulk_tokens=100)])
def test_a_batch_of_small_requests_is_told_apart_before_tokenizing(tiny_build: TinyBuild, limits: Limits) -> None:
    """``all_small`` (the adapter then returns every response at once) bounds a request's sub-tokens from its bytes
    and texts; whatever it calls small stays out of the bulk lane once tokenized."""
    import random

    from ner_triton.runtime.fused import FusedNer

    version = next(p for p in sorted((tiny_build.repository / "ner").iterdir()) if p.is_dir())
    ner = FusedNer(version, limits, threads=1, slots=Slots("small-test", 1))
    rng = random.Random(7)
    words = ["Maria", "visited", "Madrid", ".", "ACME", "Corp", "x", "Ünïcødé", "2024-03-14", "!", "the", "cheese"]
    small = 0
    for _ in range(300):
        most = rng.choice([limits.bulk_tokens // 40, limits.bulk_tokens // 10])  # around the bound and past it
        texts = [" ".join(rng.choices(words, k=rng.randint(1, most))) for _ in range(rng.randint(1, 6))]
        request = _texts(*texts).reshape(-1, 1)
        if ner.all_small([request]):
            small += 1
            tokens = sum(int(w[ATTENTION_MASK].sum()) for w in ner.pre.encode_each(texts))
            assert tokens <= limits.bulk_tokens, (tokens, texts)
    assert small > 30, "the bound must not call everything large"
    assert ner.all_small([_texts("Maria visited Madrid.").reshape(-1, 1)])
    assert not ner.all_small([_texts("the cheese " * 500).reshape(-1, 1)])
    assert not ner.all_small([np.array([[1.5]])]), "not text: the careful path, which names the error"


def test_activity_sees_which_other_instances_run_a_batch(tmp_path: Path) -> None:
    """The host-wide record behind ``threads_alone``: an instance inside ``running()`` is busy for the others,
    and a dead process's file is dropped."""
    a, b = Activity("model", tmp_path, rescan_s=0), Activity("model", tmp_path, rescan_s=0)
    assert a.others_busy() == 0 and b.others_busy() == 0
    with a.running():
        assert b.others_busy() == 1 and a.others_busy() == 0
        with b.running():
            assert a.others_busy() == 1
    assert b.others_busy() == 0
    stale = a.directory / "999999999-dead.lock"  # no such pid
    stale.write_bytes(b"")
    assert a.others_busy() == 0 and not stale.exists()
    b.close()
    assert a.others_busy() == 0 and len(list(a.directory.glob("*.lock"))) == 1
    a.close()
