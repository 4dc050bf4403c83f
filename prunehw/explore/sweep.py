"""The sweep file and its grid: axes, validation, points, and the keys of the shared stages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from prunehw.core.artifacts import deep_merge
from prunehw.core.errors import ConfigError

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


def _parse_array(text: str) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"axes.array: {text!r} is not an array size; allowed: 'RxC' such as '8x8'") from None
    if r < 1 or c < 1:
        raise ConfigError(f"axes.array: {text!r} must have rows and columns >= 1")
    return r, c


def load_sweep(path: Path | str) -> SweepConfig:
    """Parse and validate a sweep file; one-line ``ConfigError`` on anything wrong."""
    from prunehw.core.config import CRITERIA, PRUNE_METHODS, RunConfig, VariantConfig, read_toml

    path = Path(path)
    raw = read_toml(path, "sweep file")
    unknown = sorted(set(raw) - {"sweep", "axes", *OVERRIDABLE})
    if unknown:
        raise ConfigError(f"sweep file: unknown section {unknown[0]!r}; allowed: sweep, axes, {', '.join(OVERRIDABLE)}")
    sweep = dict(raw.get("sweep", {}))
    allowed = ("name", "base", "retries", "tile_aware", "verify", "verify_images", "operating_point")
    bad = sorted(set(sweep) - set(allowed))
    if bad:
        raise ConfigError(f"[sweep] unknown key {bad[0]!r}; allowed: {', '.join(allowed)}")
    base_raw: dict = {}
    if "base" in sweep:
        base_raw = read_toml((path.parent / sweep["base"]).resolve(), "sweep.base: run config")
    for section in OVERRIDABLE:
        if section in raw:
            base_raw = deep_merge(base_raw, {section: raw[section]})
    run = RunConfig.from_toml_dict(base_raw)

    axes_raw = raw.get("axes")
    if not isinstance(axes_raw, dict):
        raise ConfigError("sweep file: [axes] is missing; it names the values of method, ratio, criterion, "
                          "weight_bits, array, dataflow")
    bad = sorted(set(axes_raw) - set(AXES))
    if bad:
        raise ConfigError(f"[axes] unknown axis {bad[0]!r}; allowed: {', '.join(AXES)}")
    defaults = {"method": ["matrix"], "ratio": [0.8], "criterion": ["l1"], "weight_bits": [run.quant.weight_bits],
                "array": [f"{run.array.rows}x{run.array.cols}"], "dataflow": [run.array.dataflow]}
    axes = {}
    for name in AXES:
        values = axes_raw.get(name, defaults[name])
        if not isinstance(values, list) or not values:
            raise ConfigError(f"axes.{name} must be a non-empty list, got {values!r}")
        if len(set(map(str, values))) != len(values):
            raise ConfigError(f"axes.{name} lists a value twice: {values!r}")
        axes[name] = values
    for m in axes["method"]:
        if m not in PRUNE_METHODS:
            raise ConfigError(f"axes.method: {m!r} is unknown; allowed: {', '.join(PRUNE_METHODS)}")
    for c in axes["criterion"]:
        if c not in CRITERIA:
            raise ConfigError(f"axes.criterion: {c!r} is unknown; allowed: {', '.join(CRITERIA)}")
    for r in axes["ratio"]:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r < 1.0:
            raise ConfigError(f"axes.ratio: {r!r} is out of range; allowed: 0 <= ratio < 1")
    for b in axes["weight_bits"]:
        if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= 8:
            raise ConfigError(f"axes.weight_bits: {b!r}; allowed: integers 2..8 (the array's multipliers are 8-bit)")
    axes["array"] = [_parse_array(a) for a in axes["array"]]
    for d in axes["dataflow"]:
        if d not in DATAFLOWS_BUILT:
            raise ConfigError(f"axes.dataflow: {d!r} is not built (no RTL, so no verified cycle model); "
                              f"allowed: {', '.join(DATAFLOWS_BUILT)}")
    for m in axes["method"]:   # every (method, criterion) pair the grid will use must be a valid variant
        for c in _criteria(m, axes["criterion"]):
            VariantConfig(m, float(axes["ratio"][0]), "iterative", c)

    name = sweep.get("name", path.stem)
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ConfigError(f"sweep.name = {name!r}; allowed: a plain folder name")
    retries = sweep.get("retries", 1)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"sweep.retries = {retries!r}; allowed: an integer >= 0")
    verify = sweep.get("verify", "none")
    if verify not in ("none", "pareto"):
        raise ConfigError(f"sweep.verify = {verify!r}; allowed: none, pareto")
    vimg = sweep.get("verify_images", 100)
    if isinstance(vimg, bool) or not isinstance(vimg, int) or vimg < 1:
        raise ConfigError(f"sweep.verify_images = {vimg!r}; allowed: an integer >= 1")
    tile_aware = sweep.get("tile_aware", False)
    if not isinstance(tile_aware, bool):
        raise ConfigError(f"sweep.tile_aware = {tile_aware!r}; allowed: true, false")
    op = sweep.get("operating_point", {"method": "matrix", "ratio": 0.8})
    if not isinstance(op, dict) or set(op) - set(AXES):
        raise ConfigError(f"sweep.operating_point = {op!r}; allowed keys: {', '.join(AXES)}")
    return SweepConfig(path, name, run, axes, retries, tile_aware, verify, vimg, op)


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
