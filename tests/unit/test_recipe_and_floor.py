"""The training recipe in steps and the quality floor's dictionary baseline, without training anything."""

from __future__ import annotations

import pytest

from ner_triton.data import Sentence
from ner_triton.errors import QualityGateError
from ner_triton.pipeline.baseline import DictionaryBaseline, enforce_quality, quality_verdict
from ner_triton.pipeline.finetune import planned_epochs
from ner_triton.settings import BuildSettings, QualitySettings


def _s(text: str, tags: str) -> Sentence:
    return Sentence(tuple(text.split()), tuple(tags.split()))


@pytest.mark.parametrize(
    ("sentences", "expected"),
    [
        (14041, 4),  # CoNLL-2003 train at batch 32: 439 steps an epoch, 4 epochs already pass 1000 steps
        (2000, 16),  # a small set: 63 steps an epoch, so 16 epochs reach 1000 steps
        (100, 40),  # a tiny set: capped at max_epochs
    ],
)
def test_small_sets_get_enough_steps(sentences: int, expected: int) -> None:
    assert planned_epochs(sentences, 32, epochs=4, min_steps=1000, max_epochs=40) == expected


def test_min_steps_zero_keeps_the_epochs() -> None:
    assert planned_epochs(3000, 32, epochs=2, min_steps=0, max_epochs=40) == 2


def test_baseline_tags_spans_seen_in_training_longest_first() -> None:
    train = [
        _s("New York Times reported", "B-company I-company I-company O"),
        _s("New York is big", "B-geo-loc I-geo-loc O O"),
        _s("in York", "O B-geo-loc"),
        _s("New York again", "B-geo-loc I-geo-loc O"),
    ]
    base = DictionaryBaseline.fit(train)
    assert base.spans[("New", "York")] == "geo-loc" and base.longest == 3
    got = base.tag(_s("the New York Times and New York and York", "O O O O O O O O O"))
    assert got == ["O", "B-company", "I-company", "I-company", "O", "B-geo-loc", "I-geo-loc", "O", "B-geo-loc"]
    test = [_s("New York Times wins", "B-company I-company I-company O"), _s("Oslo", "B-geo-loc")]
    result = base.evaluate(test)
    assert result.micro.precision == 1.0 and result.micro.recall == 0.5


def test_the_floor_moves_with_the_baseline_and_names_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    floor = QualitySettings()
    assert quality_verdict(0.88, 0.60, floor)["passed"]  # newswire: far above its baseline
    assert quality_verdict(0.40, 0.20, floor)["passed"]  # hard data: a low F1 that still learned
    useless = quality_verdict(0.10, 0.20, floor)
    assert not useless["passed"] and "not 5 points above the dictionary baseline 0.2000" in useless["failures"][0]
    with pytest.raises(QualityGateError, match=r"quality floor failed: .* train longer \(MIN_STEPS, EPOCHS\).*LR"):
        enforce_quality(useless, tmp_path / "report.md")
    assert not quality_verdict(0.5, 0.2, QualitySettings(min_f1=0.6))["passed"]
    assert quality_verdict(0.1, 0.9, QualitySettings(baseline_margin_points=None))["passed"]


def test_data_and_floor_settings_from_the_environment() -> None:
    s = BuildSettings.from_env(
        {
            "DATA": "hub:some/dataset",
            "SCHEME": "BIOES",
            "HUB_TOKENS": "words",
            "HUB_TAGS": "labels",
            "HUB_SPLITS": "train=train,valid=dev,test=test",
            "MIN_STEPS": "200",
            "MIN_F1": "0.5",
            "BASELINE_MARGIN": "off",
        }
    )
    assert s.source.hub_dataset == "some/dataset" and s.source.scheme == "bioes"
    assert dict(s.source.hub_splits) == {"train": "train", "valid": "dev", "test": "test"}
    assert (s.source.hub_tokens, s.source.hub_tags) == ("words", "labels")
    assert s.train.min_steps == 200 and s.quality == QualitySettings(baseline_margin_points=None, min_f1=0.5)


def test_types_only_in_the_test_split_are_named(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from ner_triton.labels import LabelMap
    from ner_triton.pipeline.build import baseline_scores, eval_sentences

    for split, rows in {
        "train": "Oslo\tB-city",
        "valid": "Oslo\tB-city",
        "test": "Oslo\tB-city\n\nACME\tB-firm",
    }.items():
        (tmp_path / f"{split}.tsv").write_text(rows + "\n", encoding="utf-8")
    settings = BuildSettings(data=str(tmp_path))
    scores = baseline_scores(settings, LabelMap.from_tags(["B-city"]), eval_sentences(settings))
    assert scores["types_only_in_test"] == ["firm"] and scores["f1"] == pytest.approx(2 / 3, abs=1e-3)
    assert "['firm'] occur in the test split but not in training" in caplog.text
