"""The quality floor's yardstick: the CoNLL-2003 shared task's own baseline, on the user's data.

The baseline tags only token spans that were seen as entities in the training split - a dictionary
lookup (Tjong Kim Sang and De Meulder, 2003: F1 59.61 on the English test set). Each span seen in
training takes its most frequent type; a sentence is tagged left to right, longest known span first. A
fine-tuned model that does not clearly beat this learned nothing a lookup table would not give, whatever
the data - so the build gates the FP32 model on its margin over the baseline (and on ``MIN_F1`` when set).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ner_triton.data import Sentence
from ner_triton.errors import QualityGateError
from ner_triton.pipeline.evaluate import EvalResult, score_tags
from ner_triton.settings import QualitySettings


@dataclass(frozen=True)
class DictionaryBaseline:
    """Entity spans of the training split (token tuples) and the type each takes."""

    spans: Mapping[tuple[str, ...], str]
    longest: int

    @classmethod
    def fit(cls, train: Sequence[Sentence]) -> DictionaryBaseline:
        seen: dict[tuple[str, ...], Counter[str]] = {}
        for sentence in train:
            start, etype = None, ""
            for i, tag in enumerate([*sentence.tags, "O"]):
                if start is not None and not (tag.startswith("I-") and tag[2:] == etype):
                    seen.setdefault(tuple(sentence.tokens[start:i]), Counter())[etype] += 1
                    start = None
                if tag.startswith("B-"):
                    start, etype = i, tag[2:]
        spans = {span: counts.most_common(1)[0][0] for span, counts in seen.items()}
        return cls(spans, max((len(s) for s in spans), default=0))

    def tag(self, sentence: Sentence) -> list[str]:
        """IOB2 tags of ``sentence``: known spans, longest first, left to right."""
        tokens, tags, i = sentence.tokens, ["O"] * len(sentence.tokens), 0
        while i < len(tokens):
            for n in range(min(self.longest, len(tokens) - i), 0, -1):
                etype = self.spans.get(tuple(tokens[i : i + n]))
                if etype is not None:
                    tags[i : i + n] = [f"B-{etype}", *[f"I-{etype}"] * (n - 1)]
                    i += n
                    break
            else:
                i += 1
        return tags

    def evaluate(self, sentences: Sequence[Sentence]) -> EvalResult:
        return score_tags([s.tags for s in sentences], [self.tag(s) for s in sentences])


def quality_verdict(model_f1: float, baseline_f1: float, settings: QualitySettings) -> dict[str, Any]:
    """Whether the FP32 model clears the floor: the baseline plus a margin, and ``min_f1`` when set."""
    failures = []
    margin = settings.baseline_margin_points
    if margin is not None and round((model_f1 - baseline_f1) * 100, 2) < margin:  # the figure the report shows
        failures.append(
            f"FP32 test F1 {model_f1:.4f} is not {margin:g} points above the dictionary baseline {baseline_f1:.4f} "
            "(tagging only spans seen as entities in training)"
        )
    if settings.min_f1 is not None and model_f1 < settings.min_f1:
        failures.append(f"FP32 test F1 {model_f1:.4f} is below MIN_F1={settings.min_f1:g}")
    return {
        "baseline_f1": baseline_f1,
        "model_f1": model_f1,
        "margin_points": round((model_f1 - baseline_f1) * 100, 2),
        "required_margin_points": margin,
        "min_f1": settings.min_f1,
        "passed": not failures,
        "failures": failures,
    }


def enforce_quality(verdict: Mapping[str, Any], report_md: Path) -> None:
    """Raise :class:`QualityGateError` when the model is below the floor, saying what to change."""
    if not verdict["passed"]:
        raise QualityGateError(
            "quality floor failed: " + "; ".join(verdict["failures"]) + f". See {report_md}. The model learned too "
            "little: train longer (MIN_STEPS, EPOCHS), check the learning rate (LR; 1e-4 suits this model), add "
            "training data, or check the tags of the data files (SCHEME). BASELINE_MARGIN=off and an unset MIN_F1 "
            "turn the floor off."
        )
