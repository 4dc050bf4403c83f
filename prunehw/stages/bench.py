"""The ``bench`` stage: simulated cycles per second of each variant's design in Verilator (under cocotb, and as a
bare C++ loop, the ceiling) and in Icarus, for the flow's Verilog and for Amaranth's own (the baseline). Nothing
is cached: a benchmark measures now."""

from __future__ import annotations

from pathlib import Path

__all__ = ["sim_benchmark"]


def sim_benchmark(flow, variants: list[str], verilator_images: int = 100, icarus_images: int = 1) -> list[dict]:
    """Cycles per second of each variant's design in Verilator (under cocotb and as a bare C++ loop, the
    ceiling) and in Icarus, for the Verilog the flow writes and for Amaranth's own (the baseline), every run
    checked against the golden model; writes ``sim_bench/bench.csv``, ``bench.json`` and ``bench.png``.
    Nothing is cached: a benchmark measures now."""
    from prunehw.core.artifacts import read_json, write_csv, write_json
    from prunehw.export.contract import load_contract
    from prunehw.export.golden import golden
    from prunehw.hw.compile.verilog import EMITTERS
    from prunehw.hw.generate import generate_verilog
    from prunehw.sim.bench import bench_design

    out = flow.layout.sim_bench
    n = max(verilator_images, icarus_images)
    images = flow.data.x_test[:n]
    rows = []
    for v in variants:
        rtl_dir, contract = flow.rtl(v), load_contract(flow.quantize(v))
        expected = golden(contract, images)
        for emitter in EMITTERS:
            if emitter == "prunehw":
                design_dir = rtl_dir      # the flow's own files, as `prunehw sim` runs them
            else:
                design_dir = out / v / emitter / "rtl"
                generate_verilog(contract, flow.cfg.array, design_dir, emitter=emitter)
            desc = read_json(design_dir / "accelerator.json")
            try:
                rows += bench_design(v, emitter, design_dir, desc, images, expected, out, verilator_images,
                                     icarus_images, say=flow.log)
            except RuntimeError as exc:     # a simulator's build or run failed: its last lines and log
                from prunehw.core.errors import PrunehwError

                raise PrunehwError(f"sim benchmark {v} {emitter}: {exc}") from None
    table = [r.as_dict() for r in rows]
    bad = [f"{r.design} {r.emitter} {r.kind}" for r in rows if r.match != r.images]
    write_json(out / "bench.json", table)
    write_csv(out / "bench.csv", table)
    _bench_lines(flow, rows)
    _bench_plot(rows, out / "bench.png")
    flow.log(f"sim benchmark: {out / 'bench.csv'}, bench.json, bench.png")
    if bad:
        from prunehw.core.errors import PrunehwError

        raise PrunehwError(f"sim benchmark: logits differ from the golden model in {', '.join(bad)}")
    return table

def _bench_lines(flow, rows) -> None:
    """The benchmark's table: one line per run, then each cocotb run against its bare loop (the ceiling) and
    the flow's Verilog against Amaranth's (the baseline), both measured in this run."""
    flow.log(f"{'design':20s} {'verilog':9s} {'run':19s} {'images':>6s} {'cycles':>10s} {'seconds':>8s} "
             f"{'cycles/s':>11s}")
    for r in rows:
        flow.log(f"{r.design:20s} {r.emitter:9s} {r.kind:19s} {r.images:6d} {r.cycles:10d} {r.seconds:8.2f} "
                 f"{r.cycles_per_s:11,.0f}")
    rate = {(r.design, r.emitter, r.kind): r.cycles_per_s for r in rows}
    for (design, emitter, kind), value in rate.items():
        bare = rate.get((design, emitter, "verilator bare C++"))
        if kind == "verilator cocotb" and bare:
            flow.log(f"  {design} {emitter}: bare loop / cocotb = {bare / value:.2f}")
        base = rate.get((design, "amaranth", kind))
        if emitter != "amaranth" and base:
            flow.log(f"  {design} {kind}: {emitter} / amaranth Verilog = {value / base:.2f}x")


def _bench_plot(rows, path: Path) -> None:
    """Cycles per second per design and run, one bar per Verilog emitter, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((r.design, r.kind) for r in rows))
    emitters = list(dict.fromkeys(r.emitter for r in rows))
    rate = {(r.design, r.kind, r.emitter): r.cycles_per_s for r in rows}
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups)), 4))
    width = 0.8 / max(1, len(emitters))
    for k, e in enumerate(emitters):
        xs = [i + k * width for i in range(len(groups))]
        ax.bar(xs, [rate.get((d, kind, e), 0) for d, kind in groups], width, label=f"{e} Verilog")
    ax.set_xticks([i + width * (len(emitters) - 1) / 2 for i in range(len(groups))])
    ax.set_xticklabels([f"{d}\n{kind}" for d, kind in groups], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("simulated clock cycles per second")
    ax.legend()
    fig.tight_layout()
    from prunehw.core.artifacts import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
