"""Atomic artifact writes, the run manifest and the machine-readable summary.

Every stage writes through these helpers: a file appears complete under its
final name or not at all (temp file in the same folder, fsync, ``os.replace``),
so a stage killed midway leaves the previous good state behind.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from prunehw.core.errors import ConfigError

#: Temporary files start with this; a killed stage can leave one behind, never a half-written final file.
TMP_PREFIX = ".prunehw-tmp-"

__all__ = [
    "TMP_PREFIX",
    "check_writable",
    "remove_stale_temporaries",
    "atomic_path",
    "write_bytes",
    "write_json",
    "write_csv",
    "read_json",
    "sha256_file",
    "update_summary",
    "update_variant",
    "Cache",
    "record_stage",
    "stage_is_current",
    "stage_key",
    "code_digest",
    "code_closure",
    "pyplot",
    "write_png",
]


@contextlib.contextmanager
def atomic_path(final: Path | str, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` on success.

    ``suffix`` defaults to the final file's suffix, since some writers (Keras)
    insist on one. On any exception the temporary file is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{final.name}.", suffix=final.suffix if suffix is None else suffix, dir=final.parent
    )
    os.close(fd)
    os.unlink(tmp)  # writers such as Keras refuse to overwrite; let them create it
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, final)
    except BaseException:
        if tmp_path.is_dir():
            import shutil

            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)
        raise


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend: every plot here is only written to a file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_png(fig, path: Path | str) -> Path:
    """``fig`` laid out, written atomically as a PNG at ``path``, and closed."""
    plt = pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def check_writable(folder: Path | str, what: str = "run.build_dir") -> None:
    """Refuse, in one line and without creating anything, a ``folder`` that could not be made or written: a part
    of its path that is a file, or a folder that is not writable (``what`` names the setting it comes from)."""
    folder = Path(folder)
    for part in (folder, *folder.parents):
        if part.exists():
            break
    if not part.is_dir():
        raise ConfigError(f"{what}: {folder} cannot be made: {part} is not a folder; allowed: a folder that can be "
                          f"created or written")
    if not os.access(part, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: {folder} cannot be written: no write permission on {part}")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporaries a killed run left in ``folder`` (one run per folder at a time); returns how many."""
    import shutil

    n = 0
    for p in Path(folder).rglob(f"{TMP_PREFIX}*") if Path(folder).is_dir() else []:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        n += 1
    return n


def write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: Path | str, obj: Any) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_csv(path: Path | str, rows: list[dict], columns: list[str] | None = None) -> Path:
    """``rows`` as a CSV (atomically): the header is ``columns``, or every key any row has in first-seen order;
    a missing figure is an empty cell. The one CSV writer of the project."""
    import csv
    import io

    keys = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return write_bytes(path, buf.getvalue().encode())


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def deep_merge(dst: dict, src: dict) -> dict:
    """A new dict: ``dst`` with ``src`` laid over it, nested dicts merged key by key (neither input changes)."""
    out = dict(dst)
    for key, value in src.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def dir_bytes(path: Path | str) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@contextlib.contextmanager
def _summary_locked(run_dir: Path):
    """Hold ``run_dir/summary.json``'s lock (an advisory ``flock`` on ``summary.json.lock``): one writer at a time,
    across processes, reads it and writes it back, so two stages finishing together cannot lose each other's
    figures."""
    import fcntl

    from prunehw.core.layout import RunLayout

    summary = RunLayout(run_dir).summary
    summary.parent.mkdir(parents=True, exist_ok=True)
    with open(summary.with_name(summary.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield summary
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_summary(run_dir: Path, entries: dict) -> Path:
    """Deep-merge ``entries`` into ``run_dir/summary.json`` (atomically, under its lock); its sections are those
    :data:`~prunehw.core.results.SUMMARY_SECTIONS` declares."""
    from prunehw.core.results import SUMMARY_SECTIONS, check_names

    check_names(entries, SUMMARY_SECTIONS, "summary.json")
    with _summary_locked(run_dir) as path:
        return write_json(path, deep_merge(read_json(path), entries))


def update_variant(run_dir: Path, variant: str, entries: dict, replace: tuple[str, ...] = ()) -> Path:
    """Deep-merge ``entries`` into the variant's summary entry; the keys in ``replace`` are replaced whole
    (a figure a new measurement no longer has, such as a fixed timing ``problem``, must not survive it). Its
    names are those :data:`~prunehw.core.results.VARIANT_FIELDS` declares."""
    from prunehw.core.results import VARIANT_FIELDS, check_names

    check_names(entries, VARIANT_FIELDS, f"summary.json variants.{variant}")
    with _summary_locked(run_dir) as path:
        summary = read_json(path)
        old = summary.setdefault("variants", {}).setdefault(variant, {})
        for key in replace:
            old.pop(key, None)
        return write_json(path, deep_merge(summary, {"variants": {variant: entries}}))


class Cache:
    """The project's one cache: entries named by what made them, each with the key it was made with, the files
    it wrote (hashed, and checked again on every lookup, so a file changed or removed since is a miss) and an
    optional JSON record of figures. The index is one JSON file (``index``, under ``table``).

    It serves the flow's stages (``manifest.json``; :func:`record_stage` / :func:`stage_is_current`), the sweep's
    pruned models and contracts (values kept as pickles beside the index: :meth:`load` / :meth:`keep`) and the
    experiments' points (a record per point, with the point's pruned model as its output).
    """

    def __init__(self, root: Path | str, index: str = "manifest.json", table: str = "stages"):
        self.root, self.index, self.table = Path(root), Path(root) / index, table

    def entries(self) -> dict[str, dict]:
        return read_json(self.index).get(self.table, {})

    def current(self, name: str, key: str) -> dict | None:
        """The entry ``name`` when it was made with ``key`` and its files still hash as recorded, else None."""
        entry = self.entries().get(name)
        if not entry or entry.get("key") != key:
            return None
        for rel, digest in entry["outputs"].items():
            p = self.root / rel
            if not p.is_file() or sha256_file(p) != digest:
                return None
        return entry

    def record(self, name: str, key: str, outputs: list[Path], **extra) -> dict:
        """Record that ``name`` was made with ``key`` and wrote ``outputs`` (files under the root); ``extra``
        (JSON-able, for example ``record=`` a point's figures) is kept in the entry."""
        index = read_json(self.index)
        entry = index.setdefault(self.table, {})[name] = {
            "key": key, "outputs": {str(Path(p).relative_to(self.root)): sha256_file(p) for p in outputs}, **extra}
        write_json(self.index, index)
        return entry

    def forget(self) -> None:
        """Drop every entry (the files stay; nothing refers to them)."""
        index = read_json(self.index)
        index.pop(self.table, None)
        write_json(self.index, index)

    def _value_path(self, name: str, key: str) -> Path:
        return self.root / "values" / f"{stage_key(name, key)}.pkl"

    def load(self, name: str, key: str):
        """The Python value kept for (``name``, ``key``) by :meth:`keep`; None when there is none or it changed."""
        import pickle

        if self.current(name, key) is None:
            return None
        return pickle.loads(self._value_path(name, key).read_bytes())

    def keep(self, name: str, key: str, value) -> None:
        """Keep ``value`` (pickled beside the index) as the entry (``name``, ``key``)."""
        import pickle

        path = write_bytes(self._value_path(name, key), pickle.dumps(value))
        self.record(name, key, [path])


def record_stage(run_dir: Path, stage: str, key: str, outputs: list[Path], extra: dict | None = None) -> None:
    """Record in ``manifest.json`` that ``stage`` ran with cache ``key`` and wrote ``outputs``."""
    Cache(run_dir).record(stage, key, outputs, **(extra or {}))


def stage_key(*parts) -> str:
    """A short stable hash of JSON-able ``parts``: a stage's cache key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_digest(*packages: str) -> str:
    """Hash of the source of ``prunehw.<package>`` modules: a changed generator invalidates its stage."""
    import importlib

    h = hashlib.sha256()
    for name in packages:
        folder = Path(importlib.import_module(f"prunehw.{name}").__file__).parent
        for path in sorted(folder.rglob("*.py")):     # (its subpackages too)
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()[:16]


def code_closure(*modules: str, apart: tuple[str, ...] = ()) -> str:
    """Hash of the source of ``modules`` and of every ``prunehw`` module they import, directly or through others
    (function-local imports included): a stage keyed on its own module's closure runs again when any code it
    runs is edited, the face's included. The packages in ``apart`` (and their modules) are left out, neither
    hashed nor followed: for code whose result the stage does not depend on, or keys otherwise."""
    h = hashlib.sha256()
    for name, path in sorted(_closure(tuple(sorted(modules)), tuple(sorted(apart)))):   # (by name: the same code anywhere on disk)
        h.update(name.encode() + b"\0" + Path(path).read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _closure(roots: tuple[str, ...], apart: tuple[str, ...] = ()) -> frozenset[tuple[str, str]]:
    """(module name, source file) of ``roots`` and of every ``prunehw`` module they import, transitively; the
    packages in ``apart`` and their modules are not followed."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or any(name == a or name.startswith(a + ".") for a in apart):
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        todo += _imports(name, path)
    return frozenset(seen.items())


def _module_file(name: str) -> str | None:
    """The source file of the ``prunehw`` module ``name`` (a package's ``__init__.py``), or None. Found on disk
    below its top-level package (``prunehw.hw`` and the like), so no module below those is imported for it."""
    import importlib.util

    parts = name.split(".")
    if parts[0] != "prunehw":
        return None
    try:
        spec = importlib.util.find_spec(".".join(parts[:2]))
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin)
    for part in parts[2:]:
        if path.name != "__init__.py":
            return None
        path = path.parent / part / "__init__.py" if (path.parent / part).is_dir() else path.parent / f"{part}.py"
    return str(path) if path.suffix == ".py" and path.is_file() else None


def _imports(name: str, path: str) -> list[str]:
    """The ``prunehw`` modules that the source ``path`` of module ``name`` imports, anywhere in its body."""
    import ast

    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(Path(path).read_bytes(), path)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.append(base)
            found += [f"{base}.{a.name}" for a in node.names]     # (a submodule, when it is one)
    return [f for f in found if f == "prunehw" or f.startswith("prunehw.")]


def stage_is_current(run_dir: Path, stage: str, key: str) -> bool:
    """True when ``stage`` last ran with ``key`` and all its outputs still hash as recorded."""
    return Cache(run_dir).current(stage, key) is not None
