"""Types shared by the test fixtures (importable as ``support`` because tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class TinyBuild(NamedTuple):
    """Artifacts of the whole build on the tiny model, plus its installed model repository."""

    artifacts: Path
    repository: Path
