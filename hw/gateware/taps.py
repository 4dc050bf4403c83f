"""The mutation campaign's hook: named points in the datapath where a value may be changed from outside.

Each block passes the values the campaign may alter through its ``taps``
object, ``taps(point, value, **where)``, where ``where`` names the instance
(row, column, lane) and carries the array size (``rows``, ``cols``). The
production hook, :data:`PASS`, returns every value unchanged, so a real
design contains no fault logic at all; :class:`~prunehw.sim.faults.FaultTaps`
changes the one value its fault names (``sim/faults.py`` lists the points).
"""

from __future__ import annotations

__all__ = ["PASS", "Taps"]


class Taps:
    """Every point passes its value through unchanged (the production design)."""

    def __call__(self, point: str, value, **where):
        return value


PASS = Taps()
