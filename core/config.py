"""The run configuration: one TOML file, validated into frozen pydantic models, one per table.

Every table's keys, types, defaults, ranges and choices are declared here, on the fields of its
:class:`~prunehw.core.sections.Section`; the few checks that span keys (what a layer type takes, distinct
variants) are validators. Types are strict (an int is a number, a bool is not an int), unknown keys are
refused, and every refusal, from a file, a direct construction or ``replace(...)``, is a one-line
``ConfigError`` naming the key as the file spells it (``train.epochs``, ``network.layers[2].filters``,
``run.name``) and what is allowed (see :func:`~prunehw.core.sections.config_error`).

The model side's tables (network, data, train, prune, variants) are declared in
:mod:`prunehw.core.config_model` and importable from here as well; the hardware's and the run's are here.

``to_dict()`` gives plain JSON-able data (lists for tuples); ``RunConfig.from_toml_dict`` reads the file's
layout and ``to_toml_dict`` writes it; ``key(section)`` hashes sections for stage caching.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from prunehw.core.config_model import (CRITERIA, LAYER_TYPES, PADDINGS, PRUNE_METHODS, SCHEDULES, SCOPES, TARGETS, Bits,
                                        DataConfig, LayerSpec, NetworkConfig, PlainName, PruneConfig, Ratio,
                                        TrainConfig, VariantConfig, WeightBits, default_variants)
from prunehw.core.errors import ConfigError
from prunehw.core.sections import NonNegative, Positive, PositiveFloat, Section, TupleOf, config_error, must

__all__ = ["LAYER_TYPES", "PADDINGS", "PRUNE_METHODS", "SCHEDULES", "SCOPES", "CRITERIA", "TARGETS", "Ratio", "Bits",
           "WeightBits", "PlainName", "Section", "config_error", "LayerSpec", "NetworkConfig", "DataConfig", "TrainConfig",
           "PruneConfig", "VariantConfig", "ArrayConfig", "QuantConfig", "SimConfig", "SynthConfig", "BoardConfig",
           "ExperimentsConfig", "RunConfig", "read_toml", "resolve_paths", "load_config"]

#: dataflows the generator builds (output-stationary is not built: no RTL, so nothing to verify)
DATAFLOWS = ("ws",)


class ArrayConfig(Section):
    """The systolic array: ``rows`` x ``cols`` PEs and its dataflow (``ws``, weight-stationary)."""

    _section = "array"
    rows: Positive = 8
    cols: Positive = 8
    dataflow: Annotated[str, must(lambda v: v in DATAFLOWS, f"is not built; allowed: {', '.join(DATAFLOWS)} "
                                                             f"(weight-stationary)")] = "ws"


class QuantConfig(Section):
    """Quantization to the numeric contract and the hls4ml check.

    ``hls_images``: test images run through hls4ml's C simulation (0 = all);
    ``workers``: C-simulation processes.
    """

    _section = "quant"
    weight_bits: Bits = 8
    act_bits: Bits = 8
    calibration_images: Positive = 1024
    hls_backend: Literal["Vivado", "Vitis"] = "Vivado"
    hls_images: NonNegative = 0
    workers: Positive = 2


class SimConfig(Section):
    """cocotb RTL simulation in ``prunehw run``: test images per simulator (0 = all) and processes."""

    _section = "sim"
    verilator_images: NonNegative = 0
    icarus_images: NonNegative = 10
    workers: Positive = 2


class SynthConfig(Section):
    """Synthesis and place-and-route (``prunehw synth``, ``make synth-report``).

    ``device``: the part each variant is synthesised and placed on
    (``LFE5U-25F``, ``LFE5U-45F`` or ``LFE5U-85F``; a variant that cannot fit
    it is said so in one line, before any tool runs); ``devices``: more parts
    for the device table of ``make synth-report`` (each variant placed on each,
    or refused in one line with what the part lacks; the smallest it fits is
    reported; a part short of multipliers gets its own Verilog, checked in
    Verilator on ``check_images`` test images before it is synthesised);
    ``target_mhz``: the
    clock nextpnr is asked to close (a lower achieved Fmax is reported as a
    timing failure); ``workers``: variants synthesised at once (each tool run
    is single-threaded); ``seed``: nextpnr's placer seed.
    """

    _section = "synth"
    device: str = "LFE5U-85F"
    devices: list[str] = []
    check_images: Positive = 200
    target_mhz: PositiveFloat = 100.0
    workers: Positive = 2
    seed: Positive = 1

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler):
        out = handler(self)
        if out.get("device") == "LFE5U-85F":     # (the part every run was placed on before it could be chosen)
            out.pop("device")
        if not out.get("devices"):              # (nor a device table, before there was one)
            out.pop("devices", None)
        if out.get("check_images") == 200:
            out.pop("check_images")
        return out


#: The boards a bitstream is built for, and the part each carries.
BOARDS = {"ULX3S-85F": "LFE5U-85F", "iCEBreaker": "iCE40UP5K"}
#: The iCEBreaker's design runs from its 12 MHz oscillator (no PLL).
ICEBREAKER_MHZ = 12.0


class BoardConfig(Section):
    """The accelerator on a board (``prunehw board``, ``make bitstream``, ``prunehw board-run``): ``name``, the
    ULX3S-85F (an LFE5U-85F) or the iCEBreaker (an iCE40UP5K, the accelerator on the largest array its memories
    hold).

    ``clock_mhz``: the design's clock on the ULX3S, made by the board's PLL from its 25 MHz oscillator (a frequency
    Project Trellis' ecppll reaches exactly); on the iCEBreaker the design runs from its 12 MHz oscillator, whatever
    ``clock_mhz`` says (``clock``); ``baud``: the serial port's rate, a whole number of clock cycles per bit
    (at least 4); ``timeout_ms``: how long a frame may stall before the board abandons it. ``sim_images``: test
    images the simulated host-to-board run checks; ``sim_divisor``: clock cycles per serial bit in that
    simulation (the board's own divisor would make each image's transfer hundreds of thousands of cycles; the
    link and the UART are the same design at any divisor).
    """

    _section = "board"
    name: Annotated[str, must(lambda v: v in BOARDS, f"is not a board prunehw builds for; allowed: {', '.join(BOARDS)}")
                    ] = "ULX3S-85F"
    clock_mhz: PositiveFloat = 100.0
    baud: Positive = 1_000_000
    timeout_ms: PositiveFloat = 20.0
    sim_images: Positive = 4
    sim_divisor: Positive = 8

    @model_validator(mode="after")
    def _whole_divisor(self):
        cycles = self.clock * 1e6 / self.baud
        if abs(cycles - round(cycles)) > 1e-9 * cycles or round(cycles) < 4:
            raise ValueError(f"baud {self.baud} at {self.clock:g} MHz is {cycles:g} clock cycles per bit; "
                             f"allowed: a whole number of at least 4 (e.g. 1000000 or 500000 at 50 MHz)")
        if self.sim_divisor < 4:
            raise ValueError(f"sim_divisor = {self.sim_divisor}; allowed: at least 4 clock cycles per bit")
        return self

    @model_serializer(mode="wrap")
    def _without_default_board(self, handler):
        out = handler(self)
        if out.get("name") == "ULX3S-85F":       # (the board every run was built for before it could be chosen)
            out.pop("name")
        return out

    @property
    def clock(self) -> float:
        """The design's clock on the board, MHz."""
        return ICEBREAKER_MHZ if self.name == "iCEBreaker" else self.clock_mhz

    @property
    def device(self) -> str:
        """The part the board carries."""
        return BOARDS[self.name]

    @property
    def divisor(self) -> int:
        """Clock cycles per serial bit on the board."""
        return round(self.clock * 1e6 / self.baud)

    @property
    def timeout_cycles(self) -> int:
        return round(self.timeout_ms * 1e-3 * self.clock * 1e6)


Ratios = Annotated[TupleOf[Ratio], Field(min_length=1)]


class ExperimentsConfig(Section):
    """The seed report's sweeps (``prunehw experiments``): ratios and the per-point fine-tuning budget."""

    _section = "experiments"
    ratios: Ratios = (0.5, 0.7, 0.8, 0.9, 0.95)
    sensitivity_ratios: Ratios = (0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
    size_ratios: Ratios = (0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
    steps: Positive = 3
    finetune_epochs: NonNegative = 1
    timing_repeats: Positive = 5
    #: a timing verdict ("faster", "slower") needs every run of one beyond every run of the other by this fraction
    timing_tolerance: Annotated[float, must(lambda v: 0.0 <= v < 1.0, "; allowed: 0 <= tolerance < 1")] = 0.10
    peer: bool = True


#: keys of the ``[run]`` table (the other fields of RunConfig are sections of their own)
_RUN_KEYS = ("name", "seed", "build_dir", "model")


class RunConfig(Section):
    name: PlainName = "default"
    seed: int = 1234
    build_dir: str = "build"
    #: a user's trained Keras model (``.keras``) to start from instead of training ``[network]``; "" trains
    model: Annotated[str, must(lambda v: not v or v.endswith(".keras"),
                               "; allowed: a .keras file (or \"\" to train [network])")] = ""
    data: DataConfig = Field(default_factory=DataConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    array: ArrayConfig = Field(default_factory=ArrayConfig)
    quant: QuantConfig = Field(default_factory=QuantConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    board: BoardConfig = Field(default_factory=BoardConfig)
    experiments: ExperimentsConfig = Field(default_factory=ExperimentsConfig)
    variants: TupleOf[VariantConfig] = Field(default_factory=default_variants)

    @field_validator("variants")
    @classmethod
    def _distinct(cls, variants):
        names = [v.name for v in variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{dup[0]!r} is listed twice; each method/ratio pair once")
        if "dense" in names:
            raise ValueError("'dense' (the trained network) is every run's first variant, not listed; a listed dense "
                             "variant is quantized otherwise (weight_bits, act_bits or quant = \"qat\")")
        return variants

    @classmethod
    def _spell(cls, loc: tuple, section: str | None = None) -> str:
        # sections are named as in the TOML file ([train], not [run.train]); run keys as run.name
        return super()._spell(loc, "run" if not loc or loc[0] in _RUN_KEYS else "")

    @classmethod
    def from_toml_dict(cls, raw: dict) -> "RunConfig":
        """Build from the TOML layout: ``[run]`` keys at top level of that table, other sections beside it."""
        raw = dict(raw)
        run = raw.pop("run", {})
        if not isinstance(run, dict):
            raise ConfigError("[run] must be a table")
        unknown = sorted(set(run) - set(_RUN_KEYS))
        if unknown:
            raise ConfigError(f"[run] unknown key {unknown[0]!r}; allowed: {', '.join(_RUN_KEYS)}")
        sections = [f for f in cls.model_fields if f not in _RUN_KEYS]
        unknown = sorted(set(raw) - set(sections))
        if unknown:
            raise ConfigError(f"config: unknown section {unknown[0]!r}; allowed: run, {', '.join(sorted(sections))}")
        return cls.from_dict({**run, **raw})

    def to_toml_dict(self) -> dict:
        d = self.to_dict()
        return {"run": {k: d.pop(k) for k in _RUN_KEYS}, **d}

    @property
    def run_dir(self) -> Path:
        return Path(self.build_dir) / self.name

    @property
    def layout(self):
        """The run folder's paths (:class:`~prunehw.core.layout.RunLayout`)."""
        from prunehw.core.layout import RunLayout

        return RunLayout(self.run_dir)

    @property
    def variant_names(self) -> tuple[str, ...]:
        """Every variant of the run: ``dense`` (the trained network), then the configured ones."""
        return tuple(v.name for v in self.all_variants)

    @property
    def all_variants(self) -> tuple[VariantConfig, ...]:
        """Every variant of the run: ``dense`` (the trained network, nothing removed), then the configured ones."""
        return (VariantConfig(method="dense"), *self.variants)

    def check_variant_name(self, name: str) -> str:
        """``name`` if the run has that variant (``dense`` included); else a one-line ``ConfigError`` listing them,
        with the closest name when one is close (``matrix-0.8`` -> ``matrix-0.80``)."""
        if name in self.variant_names:
            return name
        import difflib

        close = difflib.get_close_matches(name, self.variant_names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"variant {name!r} is not in the config; {hint}allowed: {', '.join(self.variant_names)}")

    def variant(self, name: str) -> VariantConfig:
        """The run's variant called ``name`` (``dense`` included)."""
        self.check_variant_name(name)
        return next(v for v in self.all_variants if v.name == name)

    def key(self, *sections: str) -> str:
        """A stable hash of the named sections plus the seed, for stage caching."""
        d = self.to_dict()
        payload = {"seed": self.seed, **{s: d[s] for s in sections}}
        from prunehw.core.artifacts import stage_key

        return stage_key(payload)


def read_toml(path: Path | str, what: str = "config file") -> dict:
    """The parsed TOML file; a one-line ``ConfigError`` naming ``what`` when it is missing or not TOML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


#: the keys that name files or folders, as (table, key) of the TOML layout
_PATH_KEYS = (("run", "build_dir"), ("run", "model"), ("data", "source"))


def resolve_paths(raw: dict, folder: Path | str) -> dict:
    """``raw`` (the TOML layout) with its relative paths (``run.build_dir``, ``run.model``, ``data.source`` other
    than ``"mnist"``) taken from ``folder``, the config file's folder: a config means the same wherever it is run
    from. Values that are not strings are left for validation to refuse."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for table, key in _PATH_KEYS:
        value = out.get(table, {}).get(key) if isinstance(out.get(table), dict) else None
        if not isinstance(value, str) or not value or (table, value) == ("data", "mnist") or Path(value).is_absolute():
            continue
        out[table][key] = os.path.normpath(Path(folder) / value)
    return out


def load_config(path: Path | str | None, overrides: dict | None = None) -> RunConfig:
    """Load a TOML config (defaults when ``path`` is None; its relative paths from its own folder), then apply
    ``overrides`` on [run] (paths in them as given: from the working directory)."""
    raw = resolve_paths(read_toml(path), Path(path).parent) if path is not None else {}
    cfg = RunConfig.from_toml_dict(raw)
    if overrides:
        cfg = cfg.replace(**overrides)
    return cfg
