"""The results table (``points.csv``, streamed and resumable) with its journal, ``failed.csv``, and the stage cache."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

from prunehw.core.artifacts import stage_key
from prunehw.core.errors import ConfigError

COLUMNS = ["point", "method", "ratio", "criterion", "weight_bits", "array", "rows", "cols", "dataflow",
           "ratio_measured", "weights_kept", "weight_storage_bits", "accuracy_float", "accuracy_quant", "test_images",
           "cycles", "macs", "pe_utilization", "weight_rom_bytes", "energy_pj"]



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
        from prunehw.core.artifacts import write_csv

        write_csv(self.path, [self.rows[pid] for pid in order if pid in self.rows], COLUMNS)


class _Cache:
    """The sweep's pruned models and contracts, kept in the project's cache (``core.artifacts.Cache``, index
    ``cache/index.json``) under the sweep's fingerprint: a value whose file changed since is recomputed."""

    def __init__(self, folder: Path, fingerprint: str):
        from prunehw.core.artifacts import Cache

        self.store, self.fingerprint = Cache(folder, index="index.json", table="values"), fingerprint

    def get(self, stage: str, key: tuple):
        return self.store.load(f"{stage}:{stage_key(key)}", self.fingerprint)

    def put(self, stage: str, key: tuple, value) -> None:
        self.store.keep(f"{stage}:{stage_key(key)}", self.fingerprint, value)


def _write_failures(path: Path, failed: dict[str, str]) -> None:
    from prunehw.core.artifacts import write_csv

    if not failed:
        path.unlink(missing_ok=True)
        return
    write_csv(path, [{"point": p, "error": e} for p, e in sorted(failed.items())], ["point", "error"])
