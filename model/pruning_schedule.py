"""Pruning schedules: which ratio each pruning step reaches.

Both schedules spend the same fine-tuning budget (``steps * epochs_per_step``
epochs); one-shot ("direct") prunes to the final ratio at once and fine-tunes
for the whole budget, iterative prunes in steps following the cubic ramp of
Zhu & Gupta (2017), fine-tuning after each.
"""

from __future__ import annotations

from dataclasses import dataclass

from prunehw.core.config import SCHEDULES
from prunehw.core.errors import ConfigError

__all__ = ["PruningSchedule"]


@dataclass(frozen=True)
class PruningSchedule:
    """``ratio``: final fraction of weights removed; ``steps`` pruning steps; ``epochs_per_step``."""

    kind: str
    ratio: float
    steps: int
    epochs_per_step: int

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ConfigError(f"schedule {self.kind!r} is unknown; allowed: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"pruning ratio {self.ratio!r} is out of range; allowed: 0 <= ratio < 1")
        if self.steps < 1 or self.epochs_per_step < 0:
            raise ConfigError(f"schedule needs steps >= 1 and epochs_per_step >= 0, got {self.steps}, {self.epochs_per_step}")

    def plan(self) -> list[tuple[float, int]]:
        """[(ratio reached at this step, fine-tuning epochs after it), ...]."""
        budget = self.steps * self.epochs_per_step
        if self.kind == "oneshot":
            return [(self.ratio, budget)]
        return [
            (self.ratio * (1.0 - (1.0 - k / self.steps) ** 3), self.epochs_per_step)
            for k in range(1, self.steps + 1)
        ]

    def get_config(self) -> dict:
        return {"kind": self.kind, "ratio": self.ratio, "steps": self.steps, "epochs_per_step": self.epochs_per_step}

    @classmethod
    def from_config(cls, cfg: dict) -> "PruningSchedule":
        return cls(**cfg)
