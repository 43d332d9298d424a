"""The bucket router of the equal-shape layouts (runtime.router): grouping, stacking, splitting, bad input, and
where the generator puts it. The router on a real server: tests/integration/test_equal_shapes.py."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ner_triton.errors import InvalidInputError
from ner_triton.repository.model_configs import RepositorySettings, all_configs, routed
from ner_triton.runtime.router import check_feed, plan, split, stack
from ner_triton.schema import ATTENTION_MASK, CASING_IDS, INPUT_IDS
from ner_triton.variants import Layout

NAMES = (INPUT_IDS, ATTENTION_MASK, CASING_IDS)


def feed(rows: int, length: int, value: int = 1) -> dict[str, np.ndarray]:
    return {name: np.full((rows, length), value + i, np.int64) for i, name in enumerate(NAMES)}


def test_plan_groups_by_length_and_keeps_batch_order() -> None:
    shapes = {0: (1, 32), 1: (1, 16), 2: (2, 32), 3: (1, 16), 4: (1, 64)}
    assert plan(shapes, max_rows=64) == [[1, 3], [0, 2], [4]]


def test_plan_cuts_a_group_at_max_rows_and_never_splits_a_request() -> None:
    shapes = {i: (3, 16) for i in range(5)} | {9: (10, 16)}
    calls = plan(shapes, max_rows=7)
    assert calls == [[0, 1], [2, 3], [4], [9]], "3+3 rows fit in 7; a 10-row request is a call of its own"
    assert sorted(k for c in calls for k in c) == sorted(shapes)
    assert plan({}, 64) == []


def test_stack_then_split_gives_each_request_its_rows_back() -> None:
    feeds = [feed(1, 16, 1), feed(3, 16, 10), feed(2, 16, 20)]
    stacked = stack(feeds, NAMES)
    assert stacked[INPUT_IDS].shape == (6, 16)
    logits = stacked[INPUT_IDS][:, :, None].astype(np.float32) * np.ones((1, 1, 5), np.float32)
    parts = split(logits, [1, 3, 2])
    assert [p.shape for p in parts] == [(1, 16, 5), (3, 16, 5), (2, 16, 5)]
    for part, f in zip(parts, feeds, strict=True):
        assert np.array_equal(part[:, :, 0], f[INPUT_IDS])
    with pytest.raises(RuntimeError, match="rows of logits"):
        split(logits, [1, 1])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({INPUT_IDS: np.ones((1, 4), np.int64)}, "missing input attention_mask"),
        (feed(1, 4) | {CASING_IDS: np.ones((1, 5), np.int64)}, "same shape"),
        (feed(1, 4) | {INPUT_IDS: np.ones(4, np.int64)}, r"shape \[windows, length\]"),
        (feed(1, 4) | {INPUT_IDS: np.ones((0, 4), np.int64)}, "both > 0"),
        (feed(1, 4) | {INPUT_IDS: np.ones((1, 4), np.float32)}, "integer tensor"),
    ],
)
def test_bad_inputs_are_named(bad: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_feed(bad, NAMES)
    assert check_feed(feed(2, 8), NAMES) == (2, 8)


@pytest.mark.parametrize("layout", list(Layout), ids=lambda x: x.value)
def test_every_equal_shape_layout_routes_and_the_ragged_one_does_not(layout: Layout) -> None:
    s = RepositorySettings()
    models = {c.name: c for c in all_configs(s, layout)}
    routers = [m for m in models.values() if m.name.startswith("ner_route_")]
    assert routed(s, layout) == (layout is not Layout.PYTHON) == bool(routers)
    for router in routers:
        assert models[router.parameters["target"].string_value].max_batch_size >= router.max_batch_size
        assert all(t.allow_ragged_batch for t in router.input), "the router's batcher merges any lengths"
    equal = replace(s, equal_shapes=True)
    assert routed(equal, Layout.PYTHON) and not routed(replace(equal, bucket_router=False), Layout.PYTHON)
