"""Load shapes (Locust ``LoadTestShape``), parameterised by environment variables.

``steady``: ``NER_USERS`` users for ``NER_DURATION_S``. ``ramp``: ``NER_STEP_USERS`` more users every
``NER_STEP_S`` up to ``NER_MAX_USERS`` (finds saturation). ``spike``: ``NER_USERS`` users, a burst of
``NER_SPIKE_USERS`` between 40% and 60% of ``NER_DURATION_S``, then back.
"""

from __future__ import annotations

import os

from locust import LoadTestShape


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


class SteadyShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        users, duration = _int("NER_USERS", 16), _int("NER_DURATION_S", 30)
        return (users, users) if self.get_run_time() < duration else None


class RampShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        step, every, most = _int("NER_STEP_USERS", 8), _int("NER_STEP_S", 15), _int("NER_MAX_USERS", 64)
        k = int(self.get_run_time() // every) + 1
        return (step * k, step) if step * k <= most else None


class SpikeShape(LoadTestShape):
    def tick(self) -> tuple[int, float] | None:
        users, spike, duration = _int("NER_USERS", 8), _int("NER_SPIKE_USERS", 64), _int("NER_DURATION_S", 40)
        t = self.get_run_time()
        if t >= duration:
            return None
        return (spike, spike) if 0.4 * duration <= t < 0.6 * duration else (users, spike)


SHAPES = {"steady": SteadyShape, "ramp": RampShape, "spike": SpikeShape}
