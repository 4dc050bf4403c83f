"""The flow's verification stages: the accelerator's RTL under cocotb (``sim``) and the mutation campaign.

A mixin of :class:`~prunehw.flow.Flow`, kept apart so each file does one thing: ``flow.py`` builds the
artifacts stage by stage, this module checks the hardware against them and records what it measured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunehw.core.artifacts import code_digest as _code
from prunehw.core.artifacts import record_stage, sha256_file, stage_is_current, update_variant
from prunehw.core.artifacts import stage_key as _key

__all__ = ["VerifyStages"]


class VerifyStages:
    """``sim`` and ``mutate`` (they use the flow's ``cfg``, ``data``, ``run_dir``, ``log`` and earlier stages)."""

    # -- sim (cocotb) --------------------------------------------------------------------------
    def sim(self, variants: list[str], simulator: str, images: int, workers: int = 2, waves: bool = False,
            force: bool = False) -> dict[str, dict]:
        """Run each variant's RTL under cocotb in ``simulator`` on the first ``images`` test images (0 = all).

        Jobs (variant x shard) run in ``workers`` simulator processes. Returns
        {variant: merged result}; a missing simulator raises ``SimulatorMissing``.
        """
        from prunehw.core.artifacts import write_json
        from prunehw.sim.regression import Job, merge, run_jobs
        from prunehw.sim.runner import SimulatorMissing, simulator_missing

        reason = simulator_missing(simulator)
        if reason:
            raise SimulatorMissing(reason)
        data = self.data
        n = images or len(data.x_test)
        if n > len(data.x_test):
            from prunehw.core.errors import ConfigError

            raise ConfigError(f"--images {n}: the test set has {len(data.x_test)} images")
        img_path = self.sim_images()
        images_digest = sha256_file(img_path)
        jobs, keys, results, cached = [], {}, {}, set()
        # every variant split into ``workers`` equal shards (sharing the variant's build), so the
        # processes stay balanced even when one variant is much slower than another
        shards = max(1, min(workers, n // 50))
        for v in variants:
            rtl_dir = self.rtl(v)
            contract = self.quantize(v)
            key = _key(sha256_file(rtl_dir / "prunehw_top.v"), sha256_file(contract), n, simulator, _code("sim"),
                       images_digest)
            keys[v] = key
            stage = f"sim:{simulator}:{v}"
            if not force and stage_is_current(self.run_dir, stage, key):
                from prunehw.core.artifacts import read_json

                results[v] = read_json(self.run_dir / v / f"sim_{simulator}" / "result.json")
                cached.add(v)
                continue
            bounds = np.linspace(0, n, shards + 1).astype(int)
            for s in range(shards):
                folder = self.run_dir / v / f"sim_{simulator}"
                jobs.append(Job(variant=v, simulator=simulator, start=int(bounds[s]), stop=int(bounds[s + 1]),
                                images=str(img_path), contract=str(contract), desc=str(rtl_dir / "accelerator.json"),
                                rtl_dir=str(rtl_dir), build_dir=str(folder / "build"), n_build=n,
                                work_dir=str(folder / f"shard{s}"), waves=waves))
        if jobs:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(jobs), desc=f"{simulator} jobs", unit="job")
            parts = run_jobs(jobs, workers, progress=lambda r: bar.update(1))
            bar.close()
            for v in {j["variant"] for j in jobs}:
                res = merge([p for p in parts if p["variant"] == v])
                out = write_json(self.run_dir / v / f"sim_{simulator}" / "result.json", res)
                record_stage(self.run_dir, f"sim:{simulator}:{v}", keys[v], [out])
                results[v] = res
        for v in variants:
            self._record_sim(v, simulator, results[v], cached=v in cached)
        return results

    def sim_benchmark(self, variants: list[str], verilator_images: int = 100, icarus_images: int = 1) -> list[dict]:
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

        out = self.run_dir / "sim_bench"
        n = max(verilator_images, icarus_images)
        images = self.data.x_test[:n]
        rows = []
        for v in variants:
            rtl_dir, contract = self.rtl(v), load_contract(self.quantize(v))
            expected = golden(contract, images)
            for emitter in EMITTERS:
                if emitter == "prunehw":
                    design_dir = rtl_dir      # the flow's own files, as `prunehw sim` runs them
                else:
                    design_dir = out / v / emitter / "rtl"
                    generate_verilog(contract, self.cfg.array, design_dir, emitter=emitter)
                desc = read_json(design_dir / "accelerator.json")
                try:
                    rows += bench_design(v, emitter, design_dir, desc, images, expected, out, verilator_images,
                                         icarus_images, say=self.log)
                except RuntimeError as exc:     # a simulator's build or run failed: its last lines and log
                    from prunehw.core.errors import PrunehwError

                    raise PrunehwError(f"sim benchmark {v} {emitter}: {exc}") from None
        table = [r.as_dict() for r in rows]
        bad = [f"{r.design} {r.emitter} {r.kind}" for r in rows if r.match != r.images]
        write_json(out / "bench.json", table)
        write_csv(out / "bench.csv", table)
        self._bench_lines(rows)
        _bench_plot(rows, out / "bench.png")
        self.log(f"sim benchmark: {out / 'bench.csv'}, bench.json, bench.png")
        if bad:
            from prunehw.core.errors import PrunehwError

            raise PrunehwError(f"sim benchmark: logits differ from the golden model in {', '.join(bad)}")
        return table

    def _bench_lines(self, rows) -> None:
        """The benchmark's table: one line per run, then each cocotb run against its bare loop (the ceiling) and
        the flow's Verilog against Amaranth's (the baseline), both measured in this run."""
        self.log(f"{'design':20s} {'verilog':9s} {'run':19s} {'images':>6s} {'cycles':>10s} {'seconds':>8s} "
                 f"{'cycles/s':>11s}")
        for r in rows:
            self.log(f"{r.design:20s} {r.emitter:9s} {r.kind:19s} {r.images:6d} {r.cycles:10d} {r.seconds:8.2f} "
                     f"{r.cycles_per_s:11,.0f}")
        rate = {(r.design, r.emitter, r.kind): r.cycles_per_s for r in rows}
        for (design, emitter, kind), value in rate.items():
            bare = rate.get((design, emitter, "verilator bare C++"))
            if kind == "verilator cocotb" and bare:
                self.log(f"  {design} {emitter}: bare loop / cocotb = {bare / value:.2f}")
            base = rate.get((design, "amaranth", kind))
            if emitter != "amaranth" and base:
                self.log(f"  {design} {kind}: {emitter} / amaranth Verilog = {value / base:.2f}x")

    def sim_images(self) -> Path:
        """``sim_images.npz``: the run's current test images, which the RTL simulations read.

        Rewritten whenever it differs from the current test set, so a changed
        data config never leaves the RTL running on the old images.
        """
        img_path = self.run_dir / "sim_images.npz"
        if not img_path.is_file() or not np.array_equal(np.load(img_path)["x"], self.data.x_test):
            from prunehw.core.artifacts import atomic_path

            with atomic_path(img_path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, x=self.data.x_test)
        return img_path

    def _merge_layers(self, variant: str, new: list[dict]) -> list[dict]:
        """Per-layer cycle entries with ``new`` figures laid over those already in summary.json (same layers)."""
        from prunehw.core.artifacts import read_json

        old = read_json(self.run_dir / "summary.json").get("variants", {}).get(variant, {})
        before = {p["layer"]: p for p in old.get("cycles", {}).get("per_layer", [])}
        return [{**before.get(p["layer"], {}), **p} for p in new]

    def _record_sim(self, variant: str, simulator: str, res: dict, cached: bool = False) -> None:
        from prunehw.core.artifacts import read_json
        from prunehw.hw.host.counters import COUNTERS

        desc = read_json(self.run_dir / variant / "rtl" / "accelerator.json")
        ops = [o["name"] for o in desc["ops"]]
        counters = [dict(zip(desc["counters"], c)) for c in res["counters"]]    # (the host port's names)
        y = self.data.y_test[res["images"]]
        acc = float(np.mean(np.argmax(np.array(res["logits"]), axis=1) == y)) if res["logits"] else None
        tag = f"rtl_{simulator}"
        entry: dict = {"bitexact": {tag: {"match": res["match"], "total": res["total"]}},
                       "accuracy": {tag: acc, "images": {tag: len(res["images"])}}}
        if res["first_mismatch"]:
            entry["bitexact"][tag]["first_mismatch"] = res["first_mismatch"]
        if counters:
            first = counters[0]
            same = all(c == first for c in counters)
            analytic = desc["cycles_analytic"]
            entry["cycles"] = {
                "rtl": first["total_cycles"],
                "rtl_equals_analytic": same and first["total_cycles"] == analytic["total"]
                and all(first[f"cycles_{o}"] == analytic["per_op"][o] for o in ops),
                "per_layer": self._merge_layers(variant, [{"layer": o, "analytic": analytic["per_op"][o],
                                                           "rtl": first[f"cycles_{o}"]} for o in ops]),
            }
            # clock cycles from one start to the next in the testbench: serial (load after read-out) and
            # overlapped (the next image loaded into the free slot during the inference); medians
            gaps = res.get("intervals", {})
            if gaps.get("serial") and gaps.get("overlapped"):
                entry["cycles"]["interval"] = {k: int(np.median(gaps[k])) for k in ("serial", "overlapped")}
            R, C = desc["array"]["rows"], desc["array"]["cols"]
            entry["pe_utilization"] = first["macs"] / (first["total_cycles"] * R * C)
            entry["activity"] = {k: first[k] for k in COUNTERS}
            # every image's every activity counter (memory ports, array) against the analytic model
            want = desc.get("activity_analytic", {})
            entry["activity_equals_analytic"] = bool(want) and all(c[k] == want.get(k) for c in counters for k in COUNTERS)
        update_variant(self.run_dir, variant, entry, replace=("activity",))
        cyc = entry.get("cycles", {})
        acc_text = f"{acc:.4f}" if acc is not None else "not measured"
        self.log(f"sim {simulator} {variant}: {'up to date, ' if cached else ''}{res['match']}/{res['total']} images "
                 f"bit-exact with the golden model, "
                 f"RTL accuracy {acc_text}, {cyc.get('rtl')} cycles/image "
                 f"({'equal to' if cyc.get('rtl_equals_analytic') else 'DIFFERENT from'} the analytic model; activity "
                 f"counters {'equal to' if entry.get('activity_equals_analytic') else 'DIFFERENT from'} it on every image)")
        if res["first_mismatch"]:
            self.log(f"sim {simulator} {variant}: first mismatch: {res['first_mismatch']}")

    # -- mutation campaign -----------------------------------------------------------------------
    def mutate(self, variant: str, images: int, workers: int = 2, faults: list[str] | None = None) -> list[dict]:
        """Single-fault mutants of ``variant``'s accelerator, each run on the first ``images`` test images."""
        from prunehw.core.artifacts import atomic_path, update_summary
        from prunehw.export.contract import load_contract
        from prunehw.hw.generate import program_for
        from prunehw.sim.mutation import run_campaign
        from prunehw.sim.runner import SimulatorMissing, simulator_missing

        reason = simulator_missing("verilator")
        if reason:
            raise SimulatorMissing(reason)
        contract_path = self.quantize(variant)
        contract = load_contract(contract_path)
        program = program_for(contract, self.cfg.array)
        # the stimulus is chosen by coverage: the first test images, then test images and searched inputs until
        # every arithmetic event of every layer happens (what cannot happen is reported, not counted), plus two
        # extreme images (all white; a checkerboard: every lane and sign)
        from prunehw.core.artifacts import write_csv
        from prunehw.sim.stimulus import choose_stimulus

        x, coverage = choose_stimulus(contract, self.data.x_test, images, seed=self.cfg.seed)
        white = np.full_like(x[:1], 255)
        checker = (np.indices(x.shape[1:3]).sum(axis=0) % 2 * 255).astype(np.uint8).reshape(1, *x.shape[1:3], 1)
        x = np.concatenate([x, white, np.broadcast_to(checker, white.shape)])
        write_csv(self.run_dir / "mutate" / variant / "coverage.csv", coverage)
        reached = [r for r in coverage if not r["covered_by"].startswith(("not reached", "unreachable"))]
        holes = [r for r in coverage if r["covered_by"] == "not reached"]
        missing = [r["event"] for r in holes]
        unreachable = [r["event"] for r in coverage if r["covered_by"].startswith("unreachable")]
        self.log(f"mutate {variant}: {len(x)} stimulus images cover {len(reached)}/{len(coverage)} layer events"
                 + (f"; unreachable by any image (interval bound): {', '.join(unreachable)}" if unreachable else "")
                 + (f"; NOT REACHED, undecided (closest image / interval bound, of the threshold): "
                    + ", ".join(f"{r['event']} ({r['closest']:.1%} / {r['interval_bound']:.0%})" for r in holes) if holes else "")
                 + f" ({self.run_dir / 'mutate' / variant / 'coverage.csv'})")
        img_path = self.run_dir / "mutate" / "images.npz"
        with atomic_path(img_path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, x=x)
        rows = run_campaign(program, contract_path, img_path, len(x), self.run_dir / "mutate" / variant,
                            workers=workers, faults=faults, log=self.log)
        update_summary(self.run_dir, {"mutation": {variant: {
            "caught": sum(r["caught"] is True for r in rows), "total": sum(r["caught"] != "n/a" for r in rows),
            "not_applicable": [r["fault"] for r in rows if r["caught"] == "n/a"], "images": len(x),
            "coverage": {"events": len(coverage), "covered": len(reached), "not_reached": missing,
                         "unreachable": unreachable,
                         # for each event not reached: the closest image and the interval bound, of its threshold
                         "not_reached_closest": {r["event"]: r["closest"] for r in holes},
                         "not_reached_bound": {r["event"]: r["interval_bound"] for r in holes}}}}})
        return rows


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
