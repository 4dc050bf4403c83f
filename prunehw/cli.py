"""The ``prunehw`` command line: parses arguments and calls the flow (nothing else lives here)."""

from __future__ import annotations

import argparse
import sys

from prunehw.core.errors import PrunehwError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunehw", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def stage(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", help="TOML run config (default: built-in defaults, see configs/default.toml)")
        p.add_argument("--force", action="store_true", help="redo the stage even when its artifacts are up to date")
        if name not in ("prune", "explore"):   # (prune: --model is that variant's source; explore: a sweep file)
            p.add_argument("--model", help="start from this trained .keras model instead of training [network] "
                                           "(the config key run.model)")
        if name != "explore":
            p.add_argument("--data", help="a data set .npz (x_train, y_train, x_test, y_test) instead of MNIST "
                                          "(the config key data.source)")
        return p

    stage("train", "train the float network and save it as build/<run>/dense/model.keras")
    p = stage("prune", "prune the trained network: every configured variant, or the one given by --method/--ratio")
    p.add_argument("--method", choices=("unstructured", "matrix"), help="pruning method of a single variant")
    p.add_argument("--ratio", type=float, help="fraction of weights to remove, 0 <= ratio < 1")
    p.add_argument("--target-cycles", type=int, help="matrix pruning to at most this many cycles per image on the "
                   "configured array (instead of --ratio): structures go by saliency lost per cycle saved")
    p.add_argument("--target-energy-uj", type=float, help="matrix pruning to at most this many uJ per inference "
                   "(the activity model priced by the energy table) instead of --ratio: by saliency lost per pJ saved")
    p.add_argument("--target-images-per-s", type=float, help="matrix pruning to at least this many images/s at the "
                   "clock the design is built for ([synth] target_mhz): a cycle target")
    p.add_argument("--model", help="prune this .keras file instead of the run's trained dense model")
    p.add_argument("--schedule", choices=("oneshot", "iterative"), default="iterative", help="pruning schedule (default iterative)")
    p.add_argument("--criterion", choices=("l1", "l2", "taylor", "fisher"), default="l1", help="ranking criterion (default l1)")
    p.add_argument("--no-tile-aware", action="store_true",
                   help="matrix pruning: remove the fraction asked for, not rounded to whole array tiles")
    for name, help in (("quantize", "quantize each variant to the numeric contract (contract.json + weights.npz) and run the golden model"),
                       ("export", "write the numeric contract and the hls4ml project of each variant; check hls4ml C-sim bit for bit"),
                       ("rtl", "generate each variant's accelerator Verilog (Amaranth) and its analytic cycle model")):
        p = stage(name, help)
        p.add_argument("--variant", action="append", help="only this variant (repeatable; default: dense and every configured variant)")
    p = stage("sim", "run each variant's RTL under cocotb and check it bit for bit against the golden model")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--images", type=int, default=None, help="first N test images (default: all on Verilator, 100 on Icarus)")
    p.add_argument("--variant", action="append", help="only this variant (repeatable)")
    p.add_argument("--workers", type=int, default=2, help="simulator processes (default 2)")
    p.add_argument("--waves", action="store_true", help="dump waveforms (slow)")
    p = stage("mutate", "mutation campaign: single faults built into copies of the RTL, each run through cocotb")
    p.add_argument("--variant", action="append",
                   help="variant whose RTL is mutated (repeatable; default: dense and every configured variant)")
    p.add_argument("--images", type=int, default=10, help="fixed test images per mutant (default 10)")
    p.add_argument("--fault", action="append", help="only this fault (repeatable; default all)")
    p.add_argument("--workers", type=int, default=2)
    p = stage("experiments", "the seed report's sweeps and figures, CSV + PNG under build/<run>/experiments/")
    p.add_argument("--only", action="append", help="run only this experiment (repeatable)")
    p = stage("explore", "design-space sweep (pruning x bits x array) on Ray: points.csv, Pareto fronts, PNGs")
    p.add_argument("--address", help="a running Ray cluster (default: a local Ray instance on all cores)")
    p.add_argument("--workers", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--serial", action="store_true", help="run the points one after another in this process, without Ray")
    p.add_argument("--verify", choices=("none", "pareto"), help="RTL-simulate the Pareto points (default: the sweep file's)")
    p.add_argument("--benchmark", action="store_true",
                   help="run the sweep from scratch serially and on Ray, print both times and the speedup")
    p = stage("synth", "synthesise and place-and-route each variant's accelerator (yosys + nextpnr-ecp5, LFE5U-85F); "
                       "resources, Fmax, images/s, ratios against dense")
    p.add_argument("--variant", action="append", help="only this variant (repeatable; default: dense and every configured variant)")
    p = stage("board", "the accelerator on a ULX3S-85F: its board core simulated with a host on its serial pins, "
                       "then a bitstream (yosys, nextpnr-ecp5 on the board's pins, ecppack)")
    p.add_argument("--variant", action="append", help="only this variant (repeatable; default: dense and every configured variant)")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator",
                   help="the simulator of the host-to-board run (default verilator)")
    p.add_argument("--no-bitstream", action="store_true", help="only the simulated host-to-board run")
    p = stage("board-run", "run test images through a ULX3S holding a variant's bitstream, over its serial port; "
                           "every logit checked against the golden model")
    p.add_argument("--port", required=True, help="the board's serial device (e.g. /dev/ttyUSB0) or a pyserial URL")
    p.add_argument("--variant", required=True, help="the variant whose bitstream the board holds")
    p.add_argument("--images", type=int, default=100, help="first N test images (default 100)")
    p.add_argument("--baud", type=int, help="serial rate (default: the config's [board] baud, the bitstream's)")
    stage("report", "storage, energy and savings of each variant from this run's files and RTL counters; report.md + PNGs")
    stage("run", "every stage of the flow, cached")
    return parser


def _explore(args: argparse.Namespace) -> None:
    import os

    from prunehw.explore import SINGLE_THREAD_ENV, benchmark, load_sweep, run_sweep

    if args.config is None:
        raise PrunehwError("explore: give the sweep file with --config (the default sweep is configs/explore.toml)")
    if args.workers is not None and args.workers < 1:
        raise PrunehwError(f"--workers {args.workers}: allowed: >= 1")
    sweep = load_sweep(args.config)
    if args.serial or args.benchmark:
        # The shared model is trained (if not cached) in a child with TensorFlow's usual threads, as
        # `prunehw train` would: its bits depend on the thread count. Then every task of this process
        # runs on one thread, as in Ray's workers, so both modes compute the same bits.
        _train_in_child(sweep.run)
        os.environ.update({k: v for k, v in SINGLE_THREAD_ENV.items() if k != "TQDM_DISABLE"})
    from prunehw.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    if args.benchmark:
        benchmark(sweep, workers=args.workers)
    else:
        summary = run_sweep(sweep, serial=args.serial, address=args.address, workers=args.workers, force=args.force,
                            verify=args.verify)
        if summary["failed"]:
            raise PrunehwError(f"explore: {summary['failed']} of {summary['points']} points failed; "
                               f"see {sweep.out_dir / 'failed.csv'}")
        v = summary.get("verified")
        if v and v["passed"] < v["points"]:
            raise PrunehwError(f"explore: {v['points'] - v['passed']} Pareto point(s) failed RTL verification; "
                               f"see {sweep.out_dir / 'verified.json'}")
    print(f"artifacts: {sweep.out_dir}/ (points.csv, pareto.csv, pareto_*.png, explore.json)")


def _train_stage(cfg) -> None:
    from prunehw.flow import Flow
    from prunehw.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    try:
        Flow(cfg).train()
    except PrunehwError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _train_in_child(cfg) -> None:
    import multiprocessing as mp

    child = mp.get_context("spawn").Process(target=_train_stage, args=(cfg,))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise PrunehwError(f"explore: training the base run's model failed (exit status {child.exitcode})")


def _missing_tool(what: str, exc: Exception) -> None:
    """A missing simulator or synthesis tool: a clear skip for a user, a failure in CI (``CI=true``)."""
    import os

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise PrunehwError(f"{what}: {exc} (CI=true: a missing tool fails the run)")
    print(f"{what}: SKIPPED, {exc}")


def _variant_names(args: argparse.Namespace, flow) -> list[str]:
    """The variants named by ``--variant`` (each checked against the config), or all of them."""
    names = args.variant or flow.variant_names()
    for name in names:
        if name != "dense":
            flow.cfg.variant(name)
    return names


def _run(args: argparse.Namespace) -> None:
    if args.command == "explore":
        return _explore(args)
    from prunehw.core.config import VariantConfig, load_config
    from prunehw.tf_quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from prunehw.flow import Flow

    cfg = load_config(args.config)
    if getattr(args, "model", None) and args.command != "prune":
        cfg = cfg.replace(model=args.model)
    if getattr(args, "data", None):
        cfg = cfg.replace(data=cfg.data.replace(source=args.data))
    flow = Flow(cfg)
    if args.command == "train":
        flow.train(force=args.force)
    elif args.command == "prune":
        amount = [a for a in (args.ratio, args.target_cycles, args.target_energy_uj, args.target_images_per_s)
                  if a is not None]
        if (args.method is None) != (not amount) or len(amount) > 1:
            raise PrunehwError("prune: give --method with --ratio, --target-cycles, --target-energy-uj or "
                               "--target-images-per-s (one of them), or none of these (to prune every configured "
                               "variant)")
        if args.method is None:
            for variant in cfg.variants:
                flow.prune(variant, force=args.force, source=args.model)
        else:
            variant = VariantConfig(method=args.method, ratio=args.ratio, target_cycles=args.target_cycles,
                                    target_energy_uj=args.target_energy_uj,
                                    target_images_per_s=args.target_images_per_s,
                                    schedule=args.schedule, criterion=args.criterion, tile_aware=not args.no_tile_aware)
            flow.with_variant(variant).prune(variant, force=args.force, source=args.model)
    elif args.command in ("quantize", "export", "rtl"):
        for name in _variant_names(args, flow):
            getattr(flow, args.command)(name, force=args.force)
    elif args.command == "sim":
        from prunehw.sim.runner import SimulatorMissing

        names = _variant_names(args, flow)
        n = args.images if args.images is not None else (0 if args.simulator == "verilator" else 100)
        if n < 0 or args.workers < 1:
            raise PrunehwError(f"--images {n} / --workers {args.workers}: allowed: images >= 0 (0 = all), workers >= 1")
        try:
            flow.sim(names, args.simulator, n, workers=args.workers, waves=args.waves, force=args.force)
        except SimulatorMissing as exc:
            _missing_tool(f"sim {args.simulator}", exc)
    elif args.command == "mutate":
        if args.images < 1 or args.workers < 1:
            raise PrunehwError(f"--images {args.images} / --workers {args.workers}: allowed: both >= 1")
        missed = {}
        for name in _variant_names(args, flow):
            rows = flow.mutate(name, args.images, workers=args.workers, faults=args.fault)
            missed.update({f"{name}:{r['fault']}": r for r in rows if not r["caught"]})
        if missed:
            raise PrunehwError(f"{len(missed)} fault(s) were not caught ({', '.join(missed)}): the test set has a hole")
    elif args.command == "synth":
        from prunehw.synth_report import ToolMissing, synth_variants

        names = _variant_names(args, flow)
        try:
            synth_variants(flow, names, force=args.force)
        except ToolMissing as exc:
            _missing_tool("synth", exc)
        else:
            flow.report()
    elif args.command == "board":
        from prunehw.board import build_bitstream, simulate_board
        from prunehw.sim.runner import SimulatorMissing
        from prunehw.synth_report import ToolMissing

        for name in _variant_names(args, flow):
            try:
                simulate_board(flow, name, args.simulator, force=args.force)
            except SimulatorMissing as exc:
                _missing_tool(f"board sim {args.simulator}", exc)
            if not args.no_bitstream:
                try:
                    build_bitstream(flow, name, force=args.force)
                except ToolMissing as exc:
                    _missing_tool("bitstream", exc)
        flow.report()
    elif args.command == "board-run":
        from prunehw.board import board_run

        if args.variant != "dense":
            flow.cfg.variant(args.variant)      # (an unknown name stops here, in one line)
        board_run(flow, args.variant, args.port, args.images, args.baud)
    elif args.command == "report":
        flow.report()
    elif args.command == "experiments":
        from prunehw.experiments import run_experiments

        run_experiments(flow, only=args.only, force=args.force)
    elif args.command == "run":
        from prunehw.sim.runner import SimulatorMissing

        names = flow.variant_names()
        for name in names:
            flow.export(name, force=args.force)
            flow.rtl(name, force=args.force)
        for simulator, n in (("verilator", cfg.sim.verilator_images), ("icarus", cfg.sim.icarus_images)):
            if simulator == "icarus" and n == 0:
                continue
            try:
                flow.sim(names, simulator, n, workers=cfg.sim.workers, force=args.force)
            except SimulatorMissing as exc:
                _missing_tool(f"sim {simulator}", exc)
        flow.report()
    print(f"artifacts: {cfg.run_dir}/ (summary.json, manifest.json)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except PrunehwError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
