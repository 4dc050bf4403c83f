"""Flow orchestration: each stage reads the previous stage's artifacts and writes its own.

A stage is skipped when the manifest says it last ran with the same cache key
(config sections + input hashes) and its outputs still hash as recorded.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property

import numpy as np
from pathlib import Path

from prunehw.artifacts import code_digest as _code
from prunehw.artifacts import record_stage, sha256_file, stage_is_current, stage_key as _key, update_variant, update_summary
from prunehw.config import RunConfig, VariantConfig
from prunehw.manifest import write_run_manifest

__all__ = ["Flow", "prune_variant", "quantize_variant"]


def prune_variant(model, data, cfg: RunConfig, variant: VariantConfig, out_dir: Path):
    """Prune ``model`` (in place, or a smaller copy for matrix pruning) as ``variant`` says, with ``cfg.prune``'s budget.

    Returns the pruned model and, for matrix pruning, the index maps written to ``out_dir``.
    """
    from prunehw.model.network import set_seed
    from prunehw.model.prune import prune_unstructured
    from prunehw.model.pruning_schedule import PruningSchedule

    p = cfg.prune
    set_seed(cfg.seed)
    schedule = PruningSchedule(variant.schedule, variant.ratio, p.steps, p.finetune_epochs)
    if variant.method == "unstructured":
        prune_unstructured(model, data, schedule, scope=p.scope, layer_ratios=p.layer_ratios,
                           learning_rate=p.learning_rate, batch_size=p.batch_size, norm=variant.criterion,
                           desc=variant.name)
        return model, None
    from prunehw.model.matrix_prune import prune_matrix_flow

    return prune_matrix_flow(model, data, schedule, variant, cfg, out_dir)


def quantize_variant(model, data, cfg: RunConfig, maps_path: Path | None = None, dense_path: Path | None = None):
    """The numeric contract (spec, weights, biases) of a float ``model``, calibrated on ``cfg.quant`` training images.

    ``maps_path`` and ``dense_path``: the index maps of a matrix-pruned model
    and the unpruned model they refer to, so rows it dropped are recorded as
    absent (the unpruned model is only loaded then).
    """
    from prunehw.model.quantize import quantize

    q = cfg.quant
    rng = np.random.default_rng(cfg.seed)
    calib = np.sort(rng.choice(len(data.x_train), size=min(q.calibration_images, len(data.x_train)), replace=False))
    rows_kept = None
    if maps_path is not None:
        from prunehw.model.matrix_form import geometry, kept_small_rows, load_maps
        from prunehw.model.network import load_model

        rows_kept = kept_small_rows(geometry(load_model(dense_path)), load_maps(maps_path))
    return quantize(model, data.x_train[calib], q.weight_bits, q.act_bits, rows_kept)


class Flow:
    """The stages of one run (``cfg.run_dir``), sharing the loaded data set."""

    def __init__(self, cfg: RunConfig, log=print):
        self.cfg = cfg
        self.log = log
        self._done: dict[str, Path] = {}  # stages already run or checked by this Flow
        from prunehw.artifacts import remove_stale_temporaries

        remove_stale_temporaries(cfg.run_dir)

    def _up_to_date(self, stage: str, key: str, out: Path, force: bool) -> bool:
        """True (and says so) when ``stage`` last ran with ``key`` and its outputs are intact."""
        if force or not stage_is_current(self.run_dir, stage, key):
            return False
        self.log(f"{stage.replace(':', ' ')}: up to date, {out}")
        return True

    def _once(self, stage: str, fn, *args, force: bool = False) -> Path:
        if force or stage not in self._done:
            self._done[stage] = fn(*args, force=force)
        return self._done[stage]

    @cached_property
    def data(self):
        from prunehw.model.data import load_dataset

        data = load_dataset(self.cfg.data)
        write_run_manifest(self.cfg, data.source, data.digest)
        return data

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    def model_path(self, variant: str) -> Path:
        return self.run_dir / variant / "model.keras"

    # -- train ------------------------------------------------------------------------
    def train(self, force: bool = False) -> Path:
        """Train the float network (cached); returns ``dense/model.keras``."""
        return self._once("train", self._train, force=force)

    def _train(self, force: bool = False) -> Path:
        from prunehw.model.network import build_model, save_model, weight_counts
        from prunehw.model.train import evaluate, train_float

        out = self.model_path("dense")
        key = _key(self.cfg.key("data", "network", "train"), _code("model"))
        if self._up_to_date("train", key, out, force):
            return out
        data, t = self.data, self.cfg.train
        model = build_model(self.cfg.network, data.input_shape, data.n_classes, self.cfg.seed)
        seconds = train_float(model, data, t.epochs, t.batch_size, t.learning_rate)
        acc = evaluate(model, data.x_test, data.y_test)
        total, kept = weight_counts(model)
        save_model(model, out)
        update_summary(self.run_dir, {"train": {"seconds": round(seconds, 2), "epochs": t.epochs}})
        update_variant(self.run_dir, "dense", {
            "method": "dense", "ratio_requested": 0.0, "ratio_measured": (total - kept) / total,
            "weights_total": total, "weights_kept": kept,
            "accuracy": {"float": acc, "images": {"float": int(len(data.y_test))}},
        })
        record_stage(self.run_dir, "train", key, [out])
        self.log(f"train: test accuracy {acc:.4f} on {len(data.y_test)} images, trained in {seconds:.1f} s; wrote {out}")
        return out

    # -- prune ------------------------------------------------------------------------
    def prune(self, variant: VariantConfig, force: bool = False, source: Path | None = None) -> Path:
        """Prune ``source`` (default: this run's trained dense model) as ``variant`` describes (cached)."""
        return self._once(f"prune:{variant.name}:{source}", self._prune, variant, source, force=force)

    def _prune(self, variant: VariantConfig, source: Path | None, force: bool = False) -> Path:
        from prunehw.model.network import check_fits, load_model, save_model, weight_counts
        from prunehw.model.train import evaluate

        dense = Path(source) if source is not None else self.train()
        out = self.model_path(variant.name)
        if not dense.is_file():
            from prunehw.errors import ModelFileError

            raise ModelFileError(f"model file not found: {dense}")
        key = _key(self.cfg.key("data", "prune"), variant.to_dict(), sha256_file(dense), _code("model"),
                   self.cfg.array.to_dict() if variant.method == "matrix" and variant.tile_aware else None)
        stage = f"prune:{variant.name}"
        if self._up_to_date(stage, key, out, force):
            return out
        model = load_model(dense)
        check_fits(model, self.data, str(dense))
        total_dense, _ = weight_counts(model)
        model, index_path = prune_variant(model, self.data, self.cfg, variant, out.parent)
        outputs = [out] + ([index_path] if index_path else [])
        acc = evaluate(model, self.data.x_test, self.data.y_test)
        _, kept = weight_counts(model)
        save_model(model, out)
        update_variant(self.run_dir, variant.name, {
            "method": variant.method, "schedule": variant.schedule, "criterion": variant.criterion,
            "ratio_requested": variant.ratio, "ratio_measured": (total_dense - kept) / total_dense,
            "weights_total": total_dense, "weights_kept": kept,
            "accuracy": {"float": acc, "images": {"float": int(len(self.data.y_test))}},
        })
        record_stage(self.run_dir, stage, key, outputs)
        self.log(f"prune {variant.name}: {variant.schedule}, removed {(total_dense - kept) / total_dense:.4f} of "
                 f"{total_dense} weights, test accuracy {acc:.4f}; wrote {out}")
        return out

    def variant_names(self) -> list[str]:
        return ["dense"] + [v.name for v in self.cfg.variants]

    def _float_model(self, variant: str) -> Path:
        return self.train() if variant == "dense" else self.prune(self.cfg.variant(variant))

    # -- quantize -----------------------------------------------------------------------
    def quantize(self, variant: str, force: bool = False) -> Path:
        """Quantize a variant to the numeric contract; writes ``contract.json`` + ``weights.npz`` and golden accuracy."""
        return self._once(f"quantize:{variant}", self._quantize, variant, force=force)

    def _quantize(self, variant: str, force: bool = False) -> Path:
        from prunehw.export.contract import load_contract, save_contract
        from prunehw.model.golden import golden
        from prunehw.model.network import load_model

        src = self._float_model(variant)
        out = self.run_dir / variant / "contract.json"
        q = self.cfg.quant
        maps_path = src.with_name("index_maps.json")
        # only what the contract depends on: not how many processes or images the hls4ml check uses
        contract_keys = {k: getattr(q, k) for k in ("weight_bits", "act_bits", "calibration_images")}
        key = _key(self.cfg.key("data"), contract_keys, sha256_file(src), maps_path.is_file() and sha256_file(maps_path),
                   _code("model", "export"))
        stage = f"quantize:{variant}"
        if self._up_to_date(stage, key, out, force):
            return out
        data = self.data
        maps = maps_path if variant != "dense" and maps_path.is_file() else None
        spec, w, b = quantize_variant(load_model(src), data, self.cfg, maps, self.train())
        _, npz = save_contract(out, spec, w, b)
        contract = load_contract(out)
        acc = float(np.mean(golden(contract, data.x_test).argmax(axis=1) == data.y_test))
        update_variant(self.run_dir, variant, {"accuracy": {"quant": acc, "images": {"quant": int(len(data.y_test))}},
                                               "quant": {"weight_bits": q.weight_bits, "act_bits": q.act_bits}})
        record_stage(self.run_dir, stage, key, [out, npz])
        self.log(f"quantize {variant}: golden integer model test accuracy {acc:.4f} ({q.weight_bits}-bit weights, "
                 f"{q.act_bits}-bit activations); wrote {out}")
        return out

    # -- export (hls4ml) ------------------------------------------------------------------
    def export(self, variant: str, force: bool = False) -> Path:
        """hls4ml project from the contract, compiled; its C simulation checked against the golden model."""
        return self._once(f"export:{variant}", self._export, variant, force=force)

    def _export(self, variant: str, force: bool = False) -> Path:
        from prunehw.export.contract import load_contract
        from prunehw.export.hls import convert, hls_config, predict_ints
        from prunehw.model.golden import golden
        from prunehw.model.network import load_model
        from prunehw.model.quantize import dequantized_model
        from prunehw.artifacts import write_json

        contract_path = self.quantize(variant)
        out = self.run_dir / variant / "hls"
        q = self.cfg.quant
        key = _key(self.cfg.key("data", "quant"), sha256_file(contract_path), sha256_file(contract_path.with_name("weights.npz")),
                   _code("export"))
        stage = f"export:{variant}"
        if self._up_to_date(stage, key, out, force):
            return out
        contract = load_contract(contract_path)
        model = dequantized_model(load_model(self._float_model(variant)), contract)
        hmodel = convert(model, contract, out, q.hls_backend)
        write_json(out / "prunehw_hls_config.json", hls_config(model, contract, q.hls_backend))
        data = self.data
        n = q.hls_images or len(data.x_test)
        x, y = data.x_test[:n], data.y_test[:n]
        got = predict_ints(hmodel, out, contract, x, workers=q.workers)
        want = golden(contract, x)
        equal = np.all(got == want, axis=1)
        match = int(equal.sum())
        acc = float(np.mean(got.argmax(axis=1) == y))
        entry = {"bitexact": {"hls": {"match": match, "total": int(n)}},
                 "accuracy": {"hls": acc, "images": {"hls": int(n)}}}
        if match < n:
            i = int(np.flatnonzero(~equal)[0])
            entry["bitexact"]["hls"]["first_mismatch"] = {"image": i, "hls": got[i].tolist(), "golden": want[i].tolist()}
        update_variant(self.run_dir, variant, entry)
        record_stage(self.run_dir, stage, key, [out / "prunehw_hls_config.json"])
        self.log(f"export {variant}: hls4ml C-sim equals the golden model on {match}/{n} images (logit integers), "
                 f"accuracy {acc:.4f}; project in {out}")
        if match < n:
            self.log(f"export {variant}: first mismatch at test image {entry['bitexact']['hls']['first_mismatch']['image']}")
        return out

    # -- rtl ----------------------------------------------------------------------------------
    def rtl(self, variant: str, force: bool = False) -> Path:
        """Generate the accelerator's Verilog for a variant (``<variant>/rtl/``) and its analytic cycles."""
        return self._once(f"rtl:{variant}", self._rtl, variant, force=force)

    def _rtl(self, variant: str, force: bool = False) -> Path:
        from prunehw.export.contract import load_contract
        from prunehw.hw.ecp5 import MODELS_FILE
        from prunehw.hw.generate import generate_verilog

        contract_path = self.quantize(variant)
        out = self.run_dir / variant / "rtl"
        key = _key(self.cfg.key("array"), sha256_file(contract_path), sha256_file(contract_path.with_name("weights.npz")),
                   _code("hw"))
        stage = f"rtl:{variant}"
        if self._up_to_date(stage, key, out, force):
            return out
        v, j, desc = generate_verilog(load_contract(contract_path), self.cfg.array, out)
        cyc = desc["cycles_analytic"]
        from prunehw.hw.scalesim_compare import scalesim_cycles

        # SCALE-Sim's estimate for the same matrix products on the same array (pooling is not a GEMM)
        gemms = [(o["name"], o["positions"], o["rows"], o["cols"]) for o in desc["ops"] if "positions" in o]
        ss = scalesim_cycles(gemms, self.cfg.array.rows, self.cfg.array.cols, out / "scalesim", self.cfg.array.dataflow)
        update_variant(self.run_dir, variant, {
            "cycles": {"analytic": cyc["total"], "scalesim": sum(ss.values()),
                       "analytic_matmul_layers": sum(cyc["per_op"][n] for n in ss),
                       "per_layer": self._merge_layers(variant, [{"layer": k, "analytic": c, **({"scalesim": ss[k]} if k in ss else {})}
                                                                 for k, c in cyc["per_op"].items()])},
            "array": desc["array"],
        })
        record_stage(self.run_dir, stage, key, [v, j, out / MODELS_FILE])
        self.log(f"rtl {variant}: {self.cfg.array.rows}x{self.cfg.array.cols} array, {cyc['total']} cycles per image "
                 f"(analytic), {cyc['macs']} MACs; SCALE-Sim estimates {sum(ss.values())} cycles for its conv/dense "
                 f"layers (ours {sum(cyc['per_op'][n] for n in ss)}); wrote {v}")
        return out

    # -- sim (cocotb) --------------------------------------------------------------------------
    def sim(self, variants: list[str], simulator: str, images: int, workers: int = 2, waves: bool = False,
            force: bool = False) -> dict[str, dict]:
        """Run each variant's RTL under cocotb in ``simulator`` on the first ``images`` test images (0 = all).

        Jobs (variant x shard) run in ``workers`` simulator processes. Returns
        {variant: merged result}; a missing simulator raises ``SimulatorMissing``.
        """
        from prunehw.artifacts import write_json
        from prunehw.hw.accelerator import COUNTERS
        from prunehw.sim.regression import Job, merge, run_jobs
        from prunehw.sim.runner import SimulatorMissing, simulator_missing

        reason = simulator_missing(simulator)
        if reason:
            raise SimulatorMissing(reason)
        data = self.data
        n = images or len(data.x_test)
        if n > len(data.x_test):
            from prunehw.errors import ConfigError

            raise ConfigError(f"--images {n}: the test set has {len(data.x_test)} images")
        img_path = self.sim_images()
        images_digest = sha256_file(img_path)
        jobs, keys, results, cached = [], {}, {}, set()
        # every variant split into ``workers`` equal shards (each its own build), so the
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
                from prunehw.artifacts import read_json

                results[v] = read_json(self.run_dir / v / f"sim_{simulator}" / "result.json")
                cached.add(v)
                continue
            bounds = np.linspace(0, n, shards + 1).astype(int)
            for s in range(shards):
                jobs.append(Job(variant=v, simulator=simulator, start=int(bounds[s]), stop=int(bounds[s + 1]),
                                images=str(img_path), contract=str(contract), desc=str(rtl_dir / "accelerator.json"),
                                rtl_dir=str(rtl_dir), work_dir=str(self.run_dir / v / f"sim_{simulator}" / f"shard{s}"),
                                waves=waves))
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
            self._record_sim(v, simulator, results[v], list(COUNTERS), cached=v in cached)
        return results

    def sim_images(self) -> Path:
        """``sim_images.npz``: the run's current test images, which the RTL simulations read.

        Rewritten whenever it differs from the current test set, so a changed
        data config never leaves the RTL running on the old images.
        """
        img_path = self.run_dir / "sim_images.npz"
        if not img_path.is_file() or not np.array_equal(np.load(img_path)["x"], self.data.x_test):
            from prunehw.artifacts import atomic_path

            with atomic_path(img_path) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, x=self.data.x_test)
        return img_path

    def _merge_layers(self, variant: str, new: list[dict]) -> list[dict]:
        """Per-layer cycle entries with ``new`` figures laid over those already in summary.json (same layers)."""
        from prunehw.artifacts import read_json

        old = read_json(self.run_dir / "summary.json").get("variants", {}).get(variant, {})
        before = {p["layer"]: p for p in old.get("cycles", {}).get("per_layer", [])}
        return [{**before.get(p["layer"], {}), **p} for p in new]

    def _record_sim(self, variant: str, simulator: str, res: dict, counter_names: list[str], cached: bool = False) -> None:
        from prunehw.artifacts import read_json

        desc = read_json(self.run_dir / variant / "rtl" / "accelerator.json")
        ops = [o["name"] for o in desc["ops"]]
        names = counter_names + ops
        counters = [dict(zip(names, c)) for c in res["counters"]]
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
                and all(first[o] == analytic["per_op"][o] for o in ops),
                "per_layer": self._merge_layers(variant, [{"layer": o, "analytic": analytic["per_op"][o], "rtl": first[o]}
                                                          for o in ops]),
            }
            # clock cycles from one start to the next in the testbench: serial (load after read-out) and
            # overlapped (the next image loaded into the free slot during the inference); medians
            gaps = res.get("intervals", {})
            if gaps.get("serial") and gaps.get("overlapped"):
                entry["cycles"]["interval"] = {k: int(np.median(gaps[k])) for k in ("serial", "overlapped")}
            R, C = desc["array"]["rows"], desc["array"]["cols"]
            entry["pe_utilization"] = first["macs"] / (first["total_cycles"] * R * C)
            entry["activity"] = {k: first[k] for k in counter_names}
            # every image's every activity counter (memory ports, array) against the analytic model
            want = desc.get("activity_analytic", {})
            entry["activity_equals_analytic"] = bool(want) and all(c[k] == want.get(k) for c in counters for k in counter_names)
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

    # -- report: storage, energy, ratios, plots ----------------------------------------------
    def report(self, energy_table: Path | None = None) -> Path:
        """Storage and energy per variant from this run's files and RTL counters; CSV, PNGs, report.md."""
        from prunehw.artifacts import read_json, write_bytes
        from prunehw.report import format_report, write_savings
        from prunehw.savings import energy, gating_saved_pj, load_energy_table, storage
        from prunehw.synth_report import write_synth_files

        table = load_energy_table(energy_table)
        for v in self.variant_names():
            desc_path = self.run_dir / v / "rtl" / "accelerator.json"
            desc = read_json(desc_path) if desc_path.is_file() else None
            entry: dict = {"storage_bytes": storage(self.model_path(v), desc)}
            activity = read_json(self.run_dir / "summary.json").get("variants", {}).get(v, {}).get("activity")
            if activity and desc:
                entry["energy_pj"] = energy(activity, desc, table)
                entry["energy_table"] = table["source"]
                saved = gating_saved_pj(activity, table)
                if saved is not None:
                    entry["energy_gating_saved_pj"] = saved
            update_variant(self.run_dir, v, entry, replace=("energy_pj", "energy_gating_saved_pj"))
        paths = write_savings(self.run_dir) + write_synth_files(self.run_dir)
        text = format_report(self.run_dir)
        write_bytes(self.run_dir / "report.md", ("```\n" + text + "\n```\n\n" + "\n".join(
            f"![{p.stem}]({p.relative_to(self.run_dir)})" for p in paths if p.suffix == ".png") + "\n").encode())
        self.log(text)
        return self.run_dir / "report.md"

    # -- mutation campaign -----------------------------------------------------------------------
    def mutate(self, variant: str, images: int, workers: int = 2, faults: list[str] | None = None) -> list[dict]:
        """Single-fault mutants of ``variant``'s accelerator, each run on the first ``images`` test images."""
        from prunehw.artifacts import atomic_path, update_summary
        from prunehw.export.contract import load_contract
        from prunehw.hw.generate import program_for
        from prunehw.sim.mutation import run_campaign
        from prunehw.sim.runner import SimulatorMissing, simulator_missing

        reason = simulator_missing("verilator")
        if reason:
            raise SimulatorMissing(reason)
        contract_path = self.quantize(variant)
        program = program_for(load_contract(contract_path), self.cfg.array)
        # the first test images plus two extreme ones (all white: saturates requantization;
        # a checkerboard: exercises every lane and sign), so corner-case faults show too
        x = self.data.x_test[:images]
        white = np.full_like(x[:1], 255)
        checker = (np.indices(x.shape[1:3]).sum(axis=0) % 2 * 255).astype(np.uint8).reshape(1, *x.shape[1:3], 1)
        x = np.concatenate([x, white, np.broadcast_to(checker, white.shape)])
        img_path = self.run_dir / "mutate" / "images.npz"
        with atomic_path(img_path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, x=x)
        rows = run_campaign(program, contract_path, img_path, len(x), self.run_dir / "mutate" / variant,
                            workers=workers, faults=faults, log=self.log)
        update_summary(self.run_dir, {"mutation": {variant: {"caught": sum(r["caught"] for r in rows), "total": len(rows),
                                                             "images": images}}})
        return rows

    def with_variant(self, variant: VariantConfig) -> "Flow":
        """This flow with ``variant`` added to (or replacing its namesake in) the config."""
        others = tuple(v for v in self.cfg.variants if v.name != variant.name)
        flow = Flow(dataclasses.replace(self.cfg, variants=others + (variant,)), self.log)
        if "data" in self.__dict__:
            flow.__dict__["data"] = self.data
        return flow
