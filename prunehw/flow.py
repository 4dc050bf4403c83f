"""Flow orchestration: one run's stages (``prunehw.stages``), scheduled in order and run at most once each.

A stage reads the earlier stages' artifacts and writes its own; it is skipped when the manifest says it last
ran with the same cache key (config sections, input hashes, the code it runs) and its outputs still hash as
recorded. ``Flow`` holds what the stages share (the config, the loaded data set, the log) and schedules them.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from prunehw.core.artifacts import stage_is_current
from prunehw.core.config import RunConfig, VariantConfig
from prunehw.manifest import write_run_manifest
from prunehw.stages import bench, export, mutate, prune, quantize, report, rtl, sim, train

__all__ = ["Flow"]


class Flow:
    """The stages of one run (``cfg.run_dir``), sharing the loaded data set."""

    def __init__(self, cfg: RunConfig, log=print):
        from prunehw.core.artifacts import remove_stale_temporaries
        from prunehw.core.errors import ConfigError
        from prunehw.hw.target.devices import device

        self.cfg = cfg
        self.log = log
        self._done: dict[str, Path] = {}  # stages already run or checked by this Flow
        for name in (cfg.synth.device, *cfg.synth.devices):
            device(name)           # an unknown device is refused now, not after training
        if device(cfg.synth.device).unsupported:     # (the run's Verilog is built for it)
            raise ConfigError(f"[synth] device {cfg.synth.device}: {device(cfg.synth.device).unsupported}; it may "
                              f"be one of [synth] devices, the fit table")
        remove_stale_temporaries(cfg.run_dir)

    def _once(self, stage: str, fn, *args, force: bool = False) -> Path:
        if force or stage not in self._done:
            self._done[stage] = fn(self, *args, force=force)
        return self._done[stage]

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    @property
    def layout(self):
        """The run folder's paths (:class:`~prunehw.core.layout.RunLayout`)."""
        return self.cfg.layout

    @cached_property
    def dataset(self):
        """The configured data set, loaded and checked; nothing is written."""
        from prunehw.model.data import load_dataset

        return load_dataset(self.cfg.data)

    @cached_property
    def data(self):
        """The data set of a run that writes: its source and hash go into the manifest first."""
        data = self.dataset
        write_run_manifest(self.cfg, data.source, data.digest)
        return data

    def check_inputs(self, sources: tuple[Path, ...] = ()) -> None:
        """Everything the run reads, checked before anything is written: the build folder, the data set, the
        network it trains or imports (against the data, the array and the device, unless it is already trained;
        a user's model against the variants' pruning every time) and each model given to prune (``sources``). A
        refusal is a one-line error and leaves no file."""
        from prunehw.core.artifacts import check_writable
        from prunehw.tf_quiet import import_tensorflow_quietly
        from prunehw.variants import check_prunable

        check_writable(self.run_dir)
        data = self.dataset
        import_tensorflow_quietly()
        current = stage_is_current(self.run_dir, "train", train.train_key(self))
        if self.cfg.model:       # (a user's model may be a graph: what its merges allow is checked on every run)
            model = train.user_model(self)[0]
            check_prunable(model, self.cfg.variants, self.cfg.model)
            if not current:
                train.check_fits_hardware(self, model, self.cfg.model)
        elif not current:
            from prunehw.model.network import build_model

            train.check_fits_hardware(self, build_model(self.cfg.network, data.input_shape, data.n_classes,
                                                        self.cfg.seed), "network")
        for src in sources:
            check_prunable(prune.prune_source(self, src), self.cfg.variants, str(src))

    def model_path(self, variant: str) -> Path:
        return self.layout.model(variant)

    def variant_names(self) -> list[str]:
        return list(self.cfg.variant_names)

    def float_model(self, variant: str) -> Path:
        """The float model a variant is quantized from: its pruned model (for a dense variant, the trained one)."""
        return self.prune(self.cfg.variant(variant))

    # -- the stages, each run at most once per Flow (``force`` runs it again) ------------------------------
    def train(self, force: bool = False) -> Path:
        """Train the float network, or import the user's (cached); returns ``dense/model.keras``."""
        return self._once("train", train.train, force=force)

    def prune(self, variant: VariantConfig, force: bool = False, source: Path | None = None) -> Path:
        """Prune ``source`` (default: this run's trained dense model) as ``variant`` describes (cached)."""
        return self._once(f"prune:{variant.name}:{source}", prune.prune, variant, source, force=force)

    def quantize(self, variant: str, force: bool = False) -> Path:
        """Quantize a variant to the numeric contract; writes ``contract.json`` + ``weights.npz`` and golden accuracy."""
        return self._once(f"quantize:{variant}", quantize.quantize, variant, force=force)

    def export(self, variant: str, force: bool = False) -> Path:
        """hls4ml project from the contract, compiled; its C simulation checked against the golden model."""
        return self._once(f"export:{variant}", export.export, variant, force=force)

    def rtl(self, variant: str, force: bool = False) -> Path:
        """Generate the accelerator's Verilog for a variant (``<variant>/rtl/``) and its analytic cycles."""
        return self._once(f"rtl:{variant}", rtl.rtl, variant, force=force)

    def sim(self, variants: list[str], simulator: str, images: int, workers: int = 2, waves: bool = False,
            force: bool = False) -> dict[str, dict]:
        """Each variant's RTL under cocotb in ``simulator`` on the first ``images`` test images (0 = all)."""
        return sim.sim(self, variants, simulator, images, workers, waves, force)

    def sim_images(self) -> Path:
        """``sim_images.npz``: the run's current test images, which the RTL simulations read."""
        return sim.sim_images(self)

    def sim_benchmark(self, variants: list[str], verilator_images: int = 100, icarus_images: int = 1) -> list[dict]:
        """Cycles per second of each variant's design per simulator (``prunehw.stages.bench``)."""
        return bench.sim_benchmark(self, variants, verilator_images, icarus_images)

    def mutate(self, variant: str, images: int, workers: int = 2, faults: list[str] | None = None) -> list[dict]:
        """Single-fault mutants of ``variant``'s accelerator, each run on the stimulus (``prunehw.stages.mutate``)."""
        return mutate.mutate(self, variant, images, workers, faults)

    def report(self, energy_table: Path | None = None) -> Path:
        """Storage and energy per variant from this run's files and RTL counters; CSV, PNGs, report.md."""
        return report.report(self, energy_table)

    def with_variant(self, variant: VariantConfig) -> "Flow":
        """This flow with ``variant`` added to (or replacing its namesake in) the config."""
        others = tuple(v for v in self.cfg.variants if v.name != variant.name)
        flow = Flow(self.cfg.replace(variants=others + (variant,)), self.log)
        for loaded in ("dataset", "data"):
            if loaded in self.__dict__:
                flow.__dict__[loaded] = self.__dict__[loaded]
        return flow
