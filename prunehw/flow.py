"""Flow orchestration: each stage reads the previous stage's artifacts and writes its own.

A stage is skipped when the manifest says it last ran with the same cache key
(config sections + input hashes) and its outputs still hash as recorded.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from pathlib import Path

from prunehw.core.artifacts import code_digest as _code
from prunehw.core.artifacts import record_stage, sha256_file, stage_is_current, stage_key as _key, update_variant, update_summary
from prunehw.core.config import RunConfig, VariantConfig
from prunehw.manifest import write_run_manifest
from prunehw.variants import calibration_images, cost_code, prune_variant, quantize_variant, variants_code
from prunehw.verify import VerifyStages

__all__ = ["Flow", "prune_variant", "quantize_variant"]


class Flow(VerifyStages):
    """The stages of one run (``cfg.run_dir``), sharing the loaded data set."""

    def __init__(self, cfg: RunConfig, log=print):
        self.cfg = cfg
        self.log = log
        self._done: dict[str, Path] = {}  # stages already run or checked by this Flow
        from prunehw.core.artifacts import remove_stale_temporaries
        from prunehw.hw.target.devices import device

        device(cfg.synth.device)   # an unknown device is refused now, not after training

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
    def dataset(self):
        """The configured data set, loaded and checked; nothing is written."""
        from prunehw.model.data import load_dataset

        return load_dataset(self.cfg.data)

    @cached_property
    def data(self):
        """The data set of a run that writes: its source and hash go into the manifest first."""
        data = self.dataset
        write_run_manifest(self.cfg, data.source, data.digest)
        return data

    def check_inputs(self, sources: tuple[Path, ...] = ()) -> None:
        """Everything the run reads, checked before anything is written: the build folder, the data set, the
        network it trains or imports (against the data, the array and the device, unless it is already trained)
        and each model given to prune (``sources``). A refusal is a one-line error and leaves no file."""
        from prunehw.core.artifacts import check_writable
        from prunehw.tf_quiet import import_tensorflow_quietly

        check_writable(self.run_dir)
        data = self.dataset
        import_tensorflow_quietly()
        if not stage_is_current(self.run_dir, "train", self._train_key()):
            if self.cfg.model:
                self._check_fits_hardware(self._user_model[0], self.cfg.model)
            else:
                from prunehw.model.network import build_model

                self._check_fits_hardware(build_model(self.cfg.network, data.input_shape, data.n_classes,
                                                      self.cfg.seed), "network")
        for src in sources:
            self._prune_source(src)

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
        if self.cfg.model:
            return self._import_model(force)
        from prunehw.model.network import build_model, save_model, weight_counts
        from prunehw.model.train import evaluate, train_float

        out = self.model_path("dense")
        key = self._train_key()
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

    def _train_key(self) -> str:
        """The train stage's cache key: the config's network and training, or the imported file's hash."""
        if not self.cfg.model:
            return _key(self.cfg.key("data", "network", "train"), _code("model"))
        src = Path(self.cfg.model)
        if not src.is_file():
            from prunehw.core.errors import ModelFileError

            raise ModelFileError(f"run.model: model file not found: {src}")
        return _key(self.cfg.key("data"), sha256_file(src), _code("model"))

    @cached_property
    def _user_model(self):
        """The user's model (``run.model``) rewritten into the supported layers and checked against the data and
        against the user's own model: (model, rewrite notes, largest difference from the user's outputs)."""
        from prunehw.model.user_model import import_user_model

        return import_user_model(Path(self.cfg.model), self.dataset)

    def _check_fits_hardware(self, model, where: str) -> None:
        """What the array, its memories or its counters cannot hold, said before anything is trained or written
        (the rtl stage would say it after pruning and quantizing). The dense model's accelerator is laid out from
        a contract quantized on a few images (the flow's own contract comes later, after pruning)."""
        channels, cols = model.inputs[0].shape[-1], self.cfg.array.cols
        if channels > cols:
            from prunehw.core.errors import ConfigError

            raise ConfigError(f"{where}: the input has {channels} channels but the {self.cfg.array.rows}x{cols} array "
                              f"holds at most {cols}; allowed: array.cols >= {channels}")
        from prunehw.export.contract import Contract
        from prunehw.export.quantize import quantize
        from prunehw.hw.models.cycle_model import activity_model
        from prunehw.hw.generate import check_counters_fit, check_memory_fits, program_for

        program = program_for(Contract(*quantize(model, self.dataset.x_train[:32], self.cfg.quant.weight_bits,
                                                 self.cfg.quant.act_bits)), self.cfg.array)
        check_counters_fit(activity_model(program))
        check_memory_fits(program, where)

    def _import_model(self, force: bool = False) -> Path:
        """The user's model (``run.model``) in place of training: rewritten into the supported layers, checked
        against the user's model, the data and the hardware, saved as ``dense/model.keras``."""
        from prunehw.model.network import save_model, weight_counts
        from prunehw.model.train import evaluate

        src, out = Path(self.cfg.model), self.model_path("dense")
        key = self._train_key()
        if self._up_to_date("train", key, out, force):
            return out
        model, notes, diff = self._user_model
        self._check_fits_hardware(model, str(src))
        data = self.data
        acc = evaluate(model, data.x_test, data.y_test)
        total, kept = weight_counts(model)
        save_model(model, out)
        update_summary(self.run_dir, {"train": {"imported_from": str(src), "rewrites": notes}})
        update_variant(self.run_dir, "dense", {
            "method": "dense", "ratio_requested": 0.0, "ratio_measured": (total - kept) / total,
            "weights_total": total, "weights_kept": kept,
            "accuracy": {"float": acc, "images": {"float": int(len(data.y_test))}},
        })
        record_stage(self.run_dir, "train", key, [out])
        for note in notes:
            self.log(f"train: {note}")
        self.log(f"train: imported {src} ({len(notes)} rewrites; outputs within {diff:.2g} of yours), test accuracy "
                 f"{acc:.4f} on {len(data.y_test)} images; wrote {out}")
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
            from prunehw.core.errors import ModelFileError

            raise ModelFileError(f"model file not found: {dense}")
        # (what pruning depends on: a variant that differs only in its quantization has the same key)
        key = _key(self.cfg.key("data", "prune"), variant.pruning().to_dict(), sha256_file(dense), _code("model"),
                   variants_code(),
                   self.cfg.array.to_dict() if variant.method == "matrix" and variant.tile_aware else None,
                   # (pruned to a hardware target: its cost functions and the models they are built on)
                   *([cost_code(), self.cfg.synth.target_mhz] if variant.target is not None else []))
        stage = f"prune:{variant.name}"
        if self._up_to_date(stage, key, out, force) or self._share_pruning(variant, key, force):
            return out
        if source is not None:
            model = self._prune_source(dense)
        else:
            model = load_model(dense)
            check_fits(model, self.data, str(dense))
        total_dense, _ = weight_counts(model)
        model, index_path = prune_variant(model, self.data, self.cfg, variant, out.parent)
        outputs = [out] + ([index_path] if index_path else [])
        acc = evaluate(model, self.data.x_test, self.data.y_test)
        _, kept = weight_counts(model)
        save_model(model, out)
        asked = {"ratio_requested": variant.ratio} if variant.ratio is not None else dict([variant.target])
        if variant.target_images_per_s is not None:     # (the cycle target it is, at the clock it is built for)
            from prunehw.variants import cycles_for_rate

            asked.update(target_cycles_for_rate=cycles_for_rate(variant.target_images_per_s, self.cfg),
                         target_clock_mhz=self.cfg.synth.target_mhz)
        update_variant(self.run_dir, variant.name, {
            "method": variant.method, "schedule": variant.schedule, "criterion": variant.criterion,
            **asked, "ratio_measured": (total_dense - kept) / total_dense,
            "weights_total": total_dense, "weights_kept": kept,
            "accuracy": {"float": acc, "images": {"float": int(len(self.data.y_test))}},
        })
        record_stage(self.run_dir, stage, key, outputs)
        measured = (total_dense - kept) / total_dense
        self.log(f"prune {variant.name}: {variant.schedule}, removed {measured:.4f} of "
                 f"{total_dense} weights, test accuracy {acc:.4f}; wrote {out}")
        if variant.ratio is not None and variant.method == "matrix" and variant.tile_aware and \
                abs(measured - variant.ratio) > 0.01:
            # say it: whole array tiles move the removed fraction away from the one asked for
            self.log(f"prune {variant.name}: asked to remove {variant.ratio:.2f}, removed {measured:.4f}: kept rows and "
                     f"columns are rounded to whole {self.cfg.array.rows}x{self.cfg.array.cols} array tiles "
                     f"(tile_aware = false in the variant, or --no-tile-aware, gives the ratio asked for)")
        return out

    def _prune_source(self, path: Path):
        """A model file given to prune (``prunehw prune --model``), imported as ``run.model`` is: rewritten into
        the supported layers and checked against the user's model and the data (once per file)."""
        from prunehw.model.user_model import import_user_model

        cache = self.__dict__.setdefault("_prune_sources", {})
        if path not in cache:
            cache[path] = import_user_model(Path(path), self.dataset)[0]
        return cache[path]

    def _share_pruning(self, variant: VariantConfig, key: str, force: bool) -> bool:
        """A variant that differs from one already pruned only in its quantization takes that one's pruned model
        (pruning is deterministic: the same key gives the same bits) instead of pruning again."""
        base = variant.pruning()
        if force or base.name == variant.name or not stage_is_current(self.run_dir, f"prune:{base.name}", key):
            return False
        from prunehw.variants import copy_pruned

        outputs = copy_pruned(self.run_dir, base.name, variant.name)
        record_stage(self.run_dir, f"prune:{variant.name}", key, outputs)
        self.log(f"prune {variant.name}: the pruned model of {base.name} (same pruning), {outputs[0]}")
        return True

    def variant_names(self) -> list[str]:
        return list(self.cfg.variant_names)

    def _float_model(self, variant: str) -> Path:
        return self.train() if variant == "dense" else self.prune(self.cfg.variant(variant))

    # -- quantize -----------------------------------------------------------------------
    def quantize(self, variant: str, force: bool = False) -> Path:
        """Quantize a variant to the numeric contract; writes ``contract.json`` + ``weights.npz`` and golden accuracy."""
        return self._once(f"quantize:{variant}", self._quantize, variant, force=force)

    def _allocate(self, variant: str, v: VariantConfig, model, maps, outputs: list) -> dict[str, int]:
        """``weight_bits = "auto"``: each layer's width, searched on the validation images against the dense float
        model's validation accuracy (``prunehw.variants.allocate_bits``); the result under ``bit_allocation``."""
        from prunehw.model.network import load_model
        from prunehw.model.train import evaluate
        from prunehw.variants import allocate_bits

        reference = evaluate(load_model(self.train()), self.data.x_val, self.data.y_val)
        bits, paths, said = allocate_bits(model, self.data, self.cfg, v, reference, maps, self.train(), self.run_dir)
        outputs += paths
        self.log(f"quantize {variant}: {said}")
        return bits

    def _quantize(self, variant: str, force: bool = False) -> Path:
        from prunehw.export.contract import load_contract, save_contract
        from prunehw.export.golden import golden
        from prunehw.model.network import load_model

        src = self._float_model(variant)
        out = self.run_dir / variant / "contract.json"
        q = self.cfg.quant
        v = None if variant == "dense" else self.cfg.variant(variant)
        wb, ab = (v and v.weight_bits) or q.weight_bits, (v and v.act_bits) or q.act_bits
        qat = v is not None and v.quant == "qat"
        maps_path = src.with_name("index_maps.json")
        # only what the contract depends on: not how many processes or images the hls4ml check uses
        contract_keys = {"weight_bits": wb, "act_bits": ab, "calibration_images": q.calibration_images}
        if qat:
            contract_keys.update(qat_epochs=v.qat_epochs, qat_learning_rate=v.qat_learning_rate,
                                 batch_size=self.cfg.prune.batch_size)
        if wb == "auto":        # (judged against the dense float model on the array's tiles)
            contract_keys.update(max_loss=v.max_loss, array=self.cfg.key("array"), dense=sha256_file(self.train()))
        key = _key(self.cfg.key("data"), contract_keys, sha256_file(src), maps_path.is_file() and sha256_file(maps_path),
                   _code("model", "export"), variants_code())
        stage = f"quantize:{variant}"
        if self._up_to_date(stage, key, out, force):
            return out
        data = self.data
        maps = maps_path if variant != "dense" and maps_path.is_file() else None
        model = load_model(src)
        outputs = []
        if wb == "auto":
            wb = self._allocate(variant, v, model, maps, outputs)
        if qat:
            from prunehw.export.qat import qat_finetune
            from prunehw.model.network import save_model, set_seed

            set_seed(self.cfg.seed)
            history = qat_finetune(model, data.x_train, data.y_train, calibration_images(data, self.cfg), wb, ab,
                                   v.qat_epochs, self.cfg.prune.batch_size, v.qat_learning_rate, self.cfg.seed,
                                   desc=f"QAT {variant}")
            outputs.append(save_model(model, out.with_name("model_qat.keras")))
            self.log(f"quantize {variant}: quantization-aware fine-tuning, {v.qat_epochs} epochs at {wb}-bit weights "
                     f"and {ab}-bit activations, loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}")
        spec, w, b = quantize_variant(model, data, self.cfg, maps, self.train(), (wb, ab))
        _, npz = save_contract(out, spec, w, b)
        contract = load_contract(out)
        acc = float(np.mean(golden(contract, data.x_test).argmax(axis=1) == data.y_test))
        widths = {l["name"]: {"weight": l["weight"]["bits"], "act": l["output"]["bits"]} for l in contract.weighted()}
        update_variant(self.run_dir, variant, {"accuracy": {"quant": acc, "images": {"quant": int(len(data.y_test))}},
                                               "quant": "qat" if qat else "ptq",
                                               "weight_bits": max(wb.values()) if isinstance(wb, dict) else wb,
                                               "act_bits": ab, "bits": widths}, replace=("quant",))
        record_stage(self.run_dir, stage, key, [out, npz, *outputs])
        wdesc = "/".join(map(str, wb.values())) if isinstance(wb, dict) else wb     # (per layer: 8/5/4/6)
        self.log(f"quantize {variant}: golden integer model test accuracy {acc:.4f} ({wdesc}-bit weights, "
                 f"{ab}-bit activations, {'QAT' if qat else 'PTQ'}); wrote {out}")
        return out

    # -- export (hls4ml) ------------------------------------------------------------------
    def export(self, variant: str, force: bool = False) -> Path:
        """hls4ml project from the contract, compiled; its C simulation checked against the golden model."""
        return self._once(f"export:{variant}", self._export, variant, force=force)

    def _export(self, variant: str, force: bool = False) -> Path:
        from prunehw.export.contract import load_contract
        from prunehw.export.hls import convert, hls_config, predict_ints
        from prunehw.export.golden import golden
        from prunehw.model.network import load_model
        from prunehw.export.quantize import dequantized_model
        from prunehw.core.artifacts import write_json

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
        from prunehw.hw.target.ecp5 import MODELS_FILE
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
        from prunehw.hw.models.scalesim_compare import scalesim_cycles

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

    # -- report: storage, energy, ratios, plots ----------------------------------------------
    def report(self, energy_table: Path | None = None) -> Path:
        """Storage and energy per variant from this run's files and RTL counters; CSV, PNGs, report.md."""
        from prunehw.core.artifacts import read_json, write_bytes
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

    def with_variant(self, variant: VariantConfig) -> "Flow":
        """This flow with ``variant`` added to (or replacing its namesake in) the config."""
        others = tuple(v for v in self.cfg.variants if v.name != variant.name)
        flow = Flow(self.cfg.replace(variants=others + (variant,)), self.log)
        for loaded in ("dataset", "data"):
            if loaded in self.__dict__:
                flow.__dict__[loaded] = self.__dict__[loaded]
        return flow
