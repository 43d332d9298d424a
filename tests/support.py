"""Types shared by the test fixtures (importable as ``support`` because tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ner_triton.settings import BuildSettings


class TinyBuild(NamedTuple):
    """Artifacts of the whole build on the tiny model, plus its installed model repository."""

    artifacts: Path
    repository: Path


def tiny_settings(
    model: Path,
    data: Path,
    artifacts: Path,
    repository: Path | None,
    *,
    epochs: int,
    learning_rate: float = 5e-3,
    floor: bool = False,
    **fields: Any,
) -> BuildSettings:
    """Build settings for the tests' tiny random model: batches of 8, no warm-up and no step minimum, a
    16-sentence calibration, no INT8 gate, one thread. The quality floor is off unless ``floor``: the tiny
    model is not meant to beat a lookup of its own training documents (the floor has tests of its own)."""
    from ner_triton.settings import BuildSettings, QualitySettings, QuantSettings, TrainSettings

    return BuildSettings(
        model=str(model),
        data=str(data),
        artifacts=artifacts,
        repository=repository,
        train=TrainSettings(epochs=epochs, min_steps=0, batch_size=8, learning_rate=learning_rate, warmup_ratio=0.0),
        quant=QuantSettings(calibration_sentences=16, calibration_length=32, max_f1_drop_points=100.0),
        quality=QualitySettings() if floor else QualitySettings(baseline_margin_points=None),
        threads=1,
        **fields,
    )
