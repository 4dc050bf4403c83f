"""The sweep file and its grid: axes, validation, points, and the keys of the shared stages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, Field

from prunehw.core.artifacts import deep_merge
from prunehw.core.config import (CRITERIA, PRUNE_METHODS, Bits, PlainName, Ratio, RunConfig, VariantConfig, read_toml,
                                 resolve_paths)
from prunehw.core.errors import ConfigError
from prunehw.core.sections import NonNegative, Positive, Section, must

AXES = ("method", "ratio", "criterion", "weight_bits", "array", "dataflow")
DATAFLOWS_BUILT = ("ws",)
OVERRIDABLE = ("data", "prune", "quant")


@dataclass(frozen=True)
class Point:
    method: str
    ratio: float
    criterion: str
    weight_bits: int
    rows: int
    cols: int
    dataflow: str

    @property
    def id(self) -> str:
        return f"{self.method}-{self.ratio:.2f}-{self.criterion}-w{self.weight_bits}-{self.rows}x{self.cols}-{self.dataflow}"

    @property
    def array(self) -> str:
        return f"{self.rows}x{self.cols}"


@dataclass(frozen=True)
class SweepConfig:
    """A parsed sweep file: the base run (with overrides), the axes and how to run them."""

    path: Path
    name: str
    run: object                     # RunConfig
    axes: dict
    retries: int = 1
    tile_aware: bool = False
    verify: str = "none"            # "pareto": RTL-simulate the Pareto points
    verify_images: int = 100
    operating_point: dict = dataclasses.field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        return self.run.run_dir / "explore" / self.name


def _array_size(text: str) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError("is not an array size; allowed: 'RxC' such as '8x8'") from None
    if r < 1 or c < 1:
        raise ValueError("must have rows and columns >= 1")
    return r, c


def _distinct(values: list) -> list:
    seen = [str(v) for v in values]
    dup = next((v for v, s in zip(values, seen) if seen.count(s) > 1), None)
    if dup is not None:
        raise ValueError(f"the value {dup!r} is listed twice")
    return values


T = TypeVar("T")
#: an axis: a non-empty list of distinct values
Axis = Annotated[list[T], Field(min_length=1), AfterValidator(_distinct)]
Built = Annotated[str, must(lambda v: v in DATAFLOWS_BUILT, "is not built (no RTL, so no verified cycle model); "
                                                            f"allowed: {', '.join(DATAFLOWS_BUILT)}")]


class _OperatingPoint(Section):
    """The point marked on the plots: values of some axes."""

    method: Literal[PRUNE_METHODS] | None = None
    ratio: float | None = None
    criterion: Literal[CRITERIA] | None = None
    weight_bits: int | None = None
    array: str | None = None
    dataflow: str | None = None


class _SweepTable(Section):
    """The ``[sweep]`` table: name (default: the file's stem), base run config and how to run the points."""

    _section = "sweep"
    name: PlainName
    base: str | None = None
    retries: NonNegative = 1
    tile_aware: bool = False
    verify: Literal["none", "pareto"] = "none"
    verify_images: Positive = 100
    operating_point: _OperatingPoint = _OperatingPoint(method="matrix", ratio=0.8)


class _Axes(Section):
    """The ``[axes]`` table: the values of each axis (the base run's quant and array where one is left out)."""

    _section = "axes"
    _unknown = "axis"
    method: Axis[Literal[PRUNE_METHODS]]
    ratio: Axis[Ratio]
    criterion: Axis[Literal[CRITERIA]]
    weight_bits: Axis[Bits]
    array: Axis[Annotated[str, AfterValidator(_array_size)]]     # "8x8" -> (8, 8)
    dataflow: Axis[Built]


def load_sweep(path: Path | str) -> SweepConfig:
    """Parse and validate a sweep file; one-line ``ConfigError`` on anything wrong."""
    path = Path(path)
    raw = read_toml(path, "sweep file")
    unknown = sorted(set(raw) - {"sweep", "axes", *OVERRIDABLE})
    if unknown:
        raise ConfigError(f"sweep file: unknown section {unknown[0]!r}; allowed: sweep, axes, {', '.join(OVERRIDABLE)}")
    table = raw.get("sweep", {})
    sweep = _SweepTable.from_dict({"name": path.stem, **table} if isinstance(table, dict) else table)
    base_raw: dict = {}
    if sweep.base is not None:
        base = path.parent / sweep.base
        base_raw = resolve_paths(read_toml(base, "sweep.base: run config"), base.parent)
    overrides = resolve_paths({s: raw[s] for s in OVERRIDABLE if s in raw}, path.parent)
    for section, table in overrides.items():
        base_raw = deep_merge(base_raw, {section: table})
    run = RunConfig.from_toml_dict(base_raw)

    axes_raw = raw.get("axes")
    if not isinstance(axes_raw, dict):
        raise ConfigError("sweep file: [axes] is missing; it names the values of method, ratio, criterion, "
                          "weight_bits, array, dataflow")
    defaults = {"method": ["matrix"], "ratio": [0.8], "criterion": ["l1"], "weight_bits": [run.quant.weight_bits],
                "array": [f"{run.array.rows}x{run.array.cols}"], "dataflow": [run.array.dataflow]}
    axes = _Axes.from_dict({**defaults, **axes_raw})
    for m in axes.method:   # every (method, criterion) pair the grid will use must be a valid variant
        for c in _criteria(m, axes.criterion):
            VariantConfig(method=m, ratio=float(axes.ratio[0]), schedule="iterative", criterion=c)
    return SweepConfig(path, sweep.name, run, dict(axes), sweep.retries, sweep.tile_aware, sweep.verify,
                       sweep.verify_images, sweep.operating_point.model_dump(exclude_none=True))


def _criteria(method: str, criteria: list[str]) -> list[str]:
    """Criteria a method is swept over: all for matrix pruning, magnitude ones (l1, l2) for unstructured."""
    if method == "matrix":
        return list(criteria)
    return [c for c in criteria if c in ("l1", "l2")] or ["l1"]


def grid(sweep: SweepConfig) -> list[Point]:
    """The sweep's points in a fixed order."""
    a = sweep.axes
    return [Point(m, float(r), c, int(b), rc[0], rc[1], d)
            for m in a["method"] for c in _criteria(m, a["criterion"]) for r in a["ratio"]
            for b in a["weight_bits"] for rc in a["array"] for d in a["dataflow"]]


def _prune_key(sweep: SweepConfig, p: Point) -> tuple:
    tile = (p.rows, p.cols) if p.method == "matrix" and sweep.tile_aware else None
    return (p.method, p.ratio, p.criterion, tile)


def _quant_key(sweep: SweepConfig, p: Point) -> tuple:
    return (*_prune_key(sweep, p), p.weight_bits)
