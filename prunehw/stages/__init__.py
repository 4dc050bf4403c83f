"""The flow's stages, one module each: ``train``, ``prune``, ``quantize``, ``export`` (hls4ml), ``rtl``, ``sim``
(cocotb), ``bench`` (simulation speed), ``mutate`` (the fault campaign) and ``report``.

Each stage is a function of the :class:`~prunehw.flow.Flow` (its config, data set, run folder and earlier
stages) that derives its cache key from the config sections and input files it reads and from the code it
runs (:func:`code_key`: its own module and every ``prunehw`` module that module imports), skips itself when the
manifest holds that key with intact outputs, and otherwise runs, records its figures in ``summary.json`` and
its outputs in the manifest. ``Flow`` only schedules them.
"""

from __future__ import annotations

from pathlib import Path

from prunehw.core.artifacts import code_closure, stage_is_current

__all__ = ["HARDWARE", "code_key", "up_to_date"]


#: The accelerator's code (its generator, targets and models). The train, prune and quantize stages reach it
#: only to refuse a network the hardware cannot hold (a check that writes nothing) and to price a pruning aimed at
#: a cycle or energy target, whose key names the hardware code itself (``variants.cost_code``): editing the
#: gateware does not train, prune or quantize again.
HARDWARE = ("prunehw.hw",)


def code_key(module: str, apart: tuple[str, ...] = ()) -> str:
    """The digest of the code a stage runs: its module ``module`` and every ``prunehw`` module it reaches (but
    those in the packages ``apart``)."""
    return code_closure(module, apart=apart)


def up_to_date(flow, stage: str, key: str, out: Path, force: bool) -> bool:
    """True (and says so) when ``stage`` last ran with ``key`` and its outputs are intact."""
    if force or not stage_is_current(flow.run_dir, stage, key):
        return False
    flow.log(f"{stage.replace(':', ' ')}: up to date, {out}")
    return True
