"""The ``prunehw`` command line: parses arguments and calls the flow (nothing else lives here)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from prunehw.core.errors import PrunehwError

__all__ = ["main"]


DESCRIPTION = """\
Take a small CNN from training to verified hardware: prune it so its matrices stay dense (matrix-based
pruning), quantize it to fixed point, export it through hls4ml and as a generated systolic-array accelerator,
check the hardware bit for bit against the model in Verilator and Icarus, and report the cycles, storage and
energy that pruning saves.

Every command reads a TOML run config (--config; without one, the built-in defaults, which are
configs/default.toml), checks its inputs before it writes anything, and caches its stages under
build/<run>/. `prunehw run` is the whole flow (what `make sim` runs)."""

#: what --images, --workers, --variant and --force say on every command that takes them
_IMAGES = "first N test images, 0 = all ({})"
_WORKERS = "simulator processes (default: the config's [sim] workers)"
_VARIANT = ("dense or a configured variant's name, e.g. matrix-0.80 (repeatable; default: dense and every "
            "configured variant)")
_FORCE = "redo the stage even when its artifacts are up to date"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prunehw")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    from prunehw.core.config import BOARDS as BOARD_NAMES

    parser = argparse.ArgumentParser(prog="prunehw", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"prunehw {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def stage(name: str, help: str, force: bool = True, model: bool = True, data: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", metavar="FILE", help="TOML run config; paths in it are taken from its folder "
                       "(default: the built-in defaults, the same as configs/default.toml)")
        if force:
            p.add_argument("--force", action="store_true", help=_FORCE)
        if model:
            p.add_argument("--model", metavar="FILE.keras", help="start from this trained Keras model instead of "
                           "training [network] (the config key run.model); checked against it before use")
        if data:
            p.add_argument("--data", metavar="FILE.npz", help="a data set (x_train, y_train, x_test, y_test) "
                           "instead of MNIST (the config key data.source)")
        return p

    def variants(p: argparse.ArgumentParser) -> None:
        p.add_argument("--variant", action="append", metavar="NAME", help=_VARIANT)

    stage("train", "train the float network (or import --model) and save it as build/<run>/dense/model.keras")
    p = stage("prune", "prune the trained network: every configured variant, or the one given by --method and "
                       "--ratio (or a target)", model=False)
    p.add_argument("--method", choices=("unstructured", "matrix"), help="pruning method of a single variant")
    p.add_argument("--ratio", type=float, help="fraction of weights to remove, 0 <= ratio < 1")
    p.add_argument("--target-cycles", type=int, metavar="N", help="matrix pruning to at most N cycles per image "
                   "on the configured array (instead of --ratio)")
    p.add_argument("--target-energy-uj", type=float, metavar="X", help="matrix pruning to at most X uJ per "
                   "inference (the activity model priced by the energy table) instead of --ratio")
    p.add_argument("--target-images-per-s", type=float, metavar="N", help="matrix pruning to at least N images/s "
                   "at the clock the design is built for ([synth] target_mhz): a cycle target")
    p.add_argument("--model", metavar="FILE.keras", help="prune this Keras model instead of the run's trained "
                   "network (imported and checked as train --model is)")
    p.add_argument("--schedule", choices=("oneshot", "iterative"), default="iterative",
                   help="pruning schedule (default iterative)")
    p.add_argument("--criterion", choices=("l1", "l2", "taylor", "fisher"), default="l1",
                   help="ranking criterion (default l1; taylor and fisher are for matrix pruning)")
    p.add_argument("--no-tile-aware", action="store_true",
                   help="matrix pruning: remove the fraction asked for, not rounded to whole array tiles")
    for name, help in (("quantize", "quantize each variant to the numeric contract (contract.json + weights.npz) "
                                    "and run the golden model"),
                       ("export", "write each variant's hls4ml project and check its C simulation bit for bit "
                                  "against the golden model"),
                       ("rtl", "generate each variant's accelerator Verilog (Amaranth) and its analytic cycle model")):
        variants(stage(name, help))
    p = stage("sim", "run each variant's accelerator under cocotb and check it bit for bit against the golden model")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator",
                   help="the simulator (default verilator)")
    p.add_argument("--images", type=int, metavar="N",
                   help=_IMAGES.format("default: the config's [sim] verilator_images or icarus_images"))
    variants(p)
    p.add_argument("--workers", type=int, metavar="N", help=_WORKERS)
    p.add_argument("--waves", action="store_true", help="dump waveforms (slow)")
    p.add_argument("--benchmark", action="store_true",
                   help="measure simulation speed instead: cycles per second of each variant's design in Verilator "
                        "(under cocotb and as a bare C++ loop, the ceiling) and in Icarus (1 image), for the flow's "
                        "Verilog and for Amaranth's own (the baseline); --images sets the Verilator images "
                        "(default 100); writes <run>/sim_bench/")
    p = stage("mutate", "mutation campaign: single faults built into copies of the accelerator, each run through "
                        "cocotb; fails when a fault is not caught or a layer event is neither reached nor proven unreachable",
              force=False)
    variants(p)
    p.add_argument("--images", type=int, default=10, metavar="N",
                   help=_IMAGES.format("default 10") + ", before the searched stimulus")
    p.add_argument("--fault", action="append", metavar="NAME", help="only this fault (repeatable; default all)")
    p.add_argument("--workers", type=int, metavar="N", help=_WORKERS)
    p = stage("experiments", "the reference report's sweeps and figures: CSV + PNG under build/<run>/experiments/")
    p.add_argument("--only", action="append", metavar="NAME", help="run only this experiment (repeatable)")
    p = stage("explore", "design-space sweep (pruning x bits x array) on Ray: points.csv, Pareto fronts, PNGs "
                         "(--config is the sweep file, e.g. configs/explore.toml)", model=False, data=False)
    p.add_argument("--address", help="a running Ray cluster (default: a local Ray instance on all cores)")
    p.add_argument("--workers", type=int, metavar="N", help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--serial", action="store_true", help="run the points one after another in this process, without Ray")
    p.add_argument("--verify", choices=("none", "pareto"), help="RTL-simulate the Pareto points (default: the sweep file's)")
    p.add_argument("--benchmark", action="store_true",
                   help="run the sweep from scratch serially and on Ray, print both times and the speedup")
    p = stage("synth", "synthesise and place-and-route each variant's accelerator (yosys + nextpnr-ecp5 on [synth] device, the LFE5U-85F by default); "
                       "resources, Fmax, images/s, ratios against dense; with --device, a table of variant x device")
    variants(p)
    p.add_argument("--device", action="append", metavar="PART", dest="devices",
                   help="also place every variant on this part (repeatable; default: [synth] devices), e.g. "
                        "LFE5U-25F: one table of variant x device, each cell placed or refused with what the part lacks")
    p = stage("board", "the accelerator on a board (the ULX3S-85F, or the iCEBreaker): its board core simulated with a "
                       "host on its serial pins, then a bitstream (yosys, nextpnr on the board's pins, ecppack or icepack)")
    variants(p)
    p.add_argument("--board", choices=BOARD_NAMES, help="the board (default: [board] name, the ULX3S-85F)")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator",
                   help="the simulator of the host-to-board run (default verilator)")
    p.add_argument("--no-bitstream", action="store_true", help="only the simulated host-to-board run")
    p = stage("board-run", "run test images through a board holding a variant's bitstream, over its serial port; "
                           "every logit checked against the golden model", force=False)
    p.add_argument("--board", choices=BOARD_NAMES, help="the board (default: [board] name, the ULX3S-85F)")
    p.add_argument("--port", required=True, help="the board's serial device (e.g. /dev/ttyUSB0) or a pyserial URL")
    p.add_argument("--variant", required=True, metavar="NAME", help="the variant whose bitstream the board holds: "
                   "dense or a configured variant's name")
    p.add_argument("--images", type=int, default=100, metavar="N", help=_IMAGES.format("default 100"))
    p.add_argument("--baud", type=int, help="serial rate (default: the config's [board] baud, the bitstream's)")
    stage("report", "storage, energy and savings of each variant from this run's files and RTL counters; "
                    "report.md + PNGs", force=False)
    stage("run", "the flow of `make sim`: train, prune, quantize, export (hls4ml check), rtl, sim (Verilator and "
                 "Icarus on the config's [sim] images) and report, each cached; synth, board and mutate are "
                 "commands of their own")
    return parser


def _explore(args: argparse.Namespace) -> None:
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
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise PrunehwError(f"{what}: {exc} (CI=true: a missing tool fails the run)")
    print(f"{what}: SKIPPED, {exc}")


def _check_args(args: argparse.Namespace, cfg) -> list[str]:
    """The command line's values checked against the config before anything runs; the variants it names."""
    for flag in ("images", "workers"):
        value = getattr(args, flag, None)
        if value is not None and value < (0 if flag == "images" else 1):
            raise PrunehwError(f"--{flag} {value}: allowed: " + ("N >= 0 (0 = all test images)" if flag == "images"
                                                                 else "N >= 1"))
    if args.command == "board-run":
        return [cfg.check_variant_name(args.variant)]
    if args.command == "prune":
        amount = [a for a in (args.ratio, args.target_cycles, args.target_energy_uj, args.target_images_per_s)
                  if a is not None]
        if (args.method is None) != (not amount) or len(amount) > 1:
            raise PrunehwError("prune: give --method with --ratio, --target-cycles, --target-energy-uj or "
                               "--target-images-per-s (one of them), or none of these (to prune every configured "
                               "variant)")
    return [cfg.check_variant_name(n) for n in getattr(args, "variant", None) or cfg.variant_names]


def _single_variant(args: argparse.Namespace):
    from prunehw.core.config import VariantConfig

    return VariantConfig(method=args.method, ratio=args.ratio, target_cycles=args.target_cycles,
                         target_energy_uj=args.target_energy_uj, target_images_per_s=args.target_images_per_s,
                         schedule=args.schedule, criterion=args.criterion, tile_aware=not args.no_tile_aware)


def _run(args: argparse.Namespace) -> None:
    if args.command == "explore":
        return _explore(args)
    # the config and the command line first (no TensorFlow yet: a bad value is refused in a fraction of a second)
    from prunehw.core.config import load_config

    cfg = load_config(args.config)
    if getattr(args, "model", None) and args.command != "prune":
        cfg = cfg.replace(model=args.model)
    if getattr(args, "data", None):
        cfg = cfg.replace(data=cfg.data.replace(source=args.data))
    if getattr(args, "board", None):
        cfg = cfg.replace(board=cfg.board.replace(name=args.board))
    names = _check_args(args, cfg)
    single = _single_variant(args) if args.command == "prune" and args.method is not None else None
    from prunehw.flow import Flow

    flow = Flow(cfg)
    if single is not None:
        flow = flow.with_variant(single)
    # then every input (build folder, data, models), still before anything is written
    if args.command == "report":
        from prunehw.core.artifacts import check_writable

        from prunehw.tf_quiet import import_tensorflow_quietly

        check_writable(cfg.run_dir)
        import_tensorflow_quietly()
    else:
        flow.check_inputs(sources=(Path(args.model),) if args.command == "prune" and args.model else ())
    workers = getattr(args, "workers", None) or cfg.sim.workers
    if args.command == "train":
        flow.train(force=args.force)
    elif args.command == "prune":
        for variant in (single,) if single is not None else cfg.variants:
            flow.prune(variant, force=args.force, source=args.model)
    elif args.command in ("quantize", "export", "rtl"):
        for name in names:
            getattr(flow, args.command)(name, force=args.force)
    elif args.command == "sim":
        from prunehw.sim.runner import SimulatorMissing

        n = args.images if args.images is not None else getattr(cfg.sim, f"{args.simulator}_images")
        try:
            if args.benchmark:
                flow.sim_benchmark(names, verilator_images=args.images or 100, icarus_images=1)
            else:
                flow.sim(names, args.simulator, n, workers=workers, waves=args.waves, force=args.force)
        except SimulatorMissing as exc:
            _missing_tool(f"sim {args.simulator}", exc)
    elif args.command == "mutate":
        n = args.images or len(flow.dataset.x_test)
        from prunehw.core.artifacts import read_json

        missed, undecided = {}, []
        for name in names:
            rows = flow.mutate(name, n, workers=workers, faults=args.fault)
            missed.update({f"{name}:{r['fault']}": r for r in rows if not r["caught"]})
            coverage = read_json(flow.run_dir / "summary.json")["mutation"][name]["coverage"]
            undecided += [f"{name}:{e}" for e in coverage["not_reached"]]
        holes = ([f"{len(missed)} fault(s) were not caught ({', '.join(missed)})"] if missed else []) + \
            ([f"{len(undecided)} layer event(s) neither reached nor proven unreachable ({', '.join(undecided)})"]
             if undecided else [])
        if holes:
            raise PrunehwError("; ".join(holes) + ": the test set may have a hole")
    elif args.command == "synth":
        from prunehw.synth_report import ToolMissing, synth_variants

        try:
            synth_variants(flow, names, force=args.force, devices=args.devices)
        except ToolMissing as exc:
            _missing_tool("synth", exc)
        else:
            flow.report()
    elif args.command == "board":
        from prunehw.board import build_bitstream, simulate_board
        from prunehw.sim.runner import SimulatorMissing
        from prunehw.synth_report import ToolMissing

        for name in names:
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

        board_run(flow, names[0], args.port, args.images or len(flow.dataset.x_test), args.baud)
    elif args.command == "report":
        flow.report()
    elif args.command == "experiments":
        from prunehw.experiments import run_experiments

        run_experiments(flow, only=args.only, force=args.force)
    elif args.command == "run":
        from prunehw.sim.runner import SimulatorMissing

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
    if not sys.stderr.isatty():     # progress bars on a terminal, not in logs or pipes (tqdm reads TQDM_*)
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        _run(args)
    except PrunehwError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:      # (a folder that cannot be written, a full disk: the system's reason, in one line)
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
