"""Where a run's wall time goes, by phase, for users and for tools/profile_run.py.

Phases are named with slashes (``segmentation/train``,
``segmentation/eval/target_criteria``, ``predict_target_test``) and accumulate
over the process, so a resumed run reports only the part it ran itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    """Accumulated wall seconds per named phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        return {name: round(value, 2) for name, value in self.seconds.items()}
