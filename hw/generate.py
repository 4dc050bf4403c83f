"""Verilog generation: one top per (network, array) pair, plus a JSON of its configuration and memory map."""

from __future__ import annotations

from pathlib import Path

from prunehw.core.artifacts import write_bytes, write_json
from prunehw.core.config import ArrayConfig
from prunehw.core.errors import ConfigError
from prunehw.core.geometry import written_size
from prunehw.hw.gateware.accelerator import Accelerator
from prunehw.hw.host.counters import COUNTER_BITS, counter_names
from prunehw.hw.models.cycle_model import activity_model, cycle_model
from prunehw.hw.target.devices import DEFAULT_DEVICE, device as target_device, memory_bits
from prunehw.hw.target.ecp5 import MODELS_FILE, ECP5, multipliers, write_sim_models
from prunehw.hw.compile.program import MatmulOp, Program, build_program
from prunehw.hw.compile.verilog import to_verilog

__all__ = ["TOP_NAME", "array_for", "check_counters_fit", "program_for", "describe", "generate_verilog", "write_verilog"]

TOP_NAME = "prunehw_top"


def program_for(contract, array: ArrayConfig) -> Program:
    try:
        return build_program(contract, array)
    except ValueError as exc:
        raise ConfigError(f"array {array.rows}x{array.cols} cannot hold this network: {exc}") from None


def array_for(contract, array: ArrayConfig, device: str) -> ArrayConfig:
    """The array ``contract``'s accelerator is built with for ``device``: ``array`` where the part holds it, else
    the largest that it holds (most PEs, then the squarest; rows and columns powers of two up to ``array``'s).
    Only a family whose memories map their own way is checked here (the iCE40's, :mod:`prunehw.hw.target.ice40`);
    an ECP5 part keeps ``array``. A part that holds none is refused in one line with what it lacks on a 1x1 array.
    """
    dev = target_device(device)
    if dev.family != "ice40":
        return array
    sizes = sorted({(r, c) for r in (array.rows, *(1 << i for i in range(array.rows.bit_length())))
                    for c in (array.cols, *(1 << i for i in range(array.cols.bit_length()))) if r <= array.rows
                    and c <= array.cols}, key=lambda rc: (-rc[0] * rc[1], abs(rc[0] - rc[1]), -rc[0]))
    problem = None
    for r, c in sizes:
        candidate = array.model_copy(update={"rows": r, "cols": c})
        try:
            program = build_program(contract, candidate)
        except ValueError:
            continue
        accel = Accelerator(program=program)
        accel._MustUse__silence = True     # only its memory shapes are read
        problem = dev.accelerator_problem(accel)
        if problem is None:
            return candidate
    raise ConfigError(f"{problem or f'no array up to {array.rows}x{array.cols} can hold this network'}; allowed: "
                      f"a network whose weights fit the part (prune it, or 4-bit weights), or a larger part")


def describe(program: Program, accel: Accelerator | None = None, single_port: bool = False) -> dict:
    """The array configuration, per-op tiling, memory map and the analytic cycle model, as JSON data (the memory
    shapes as a flavour with ``single_port`` buffers builds them, where it is one)."""
    model = cycle_model(program)
    R, C = program.rows, program.cols
    if accel is None:  # (the memory widths come from its plan; nothing is elaborated)
        accel = Accelerator(program=program)
        accel._MustUse__silence = True   # only its widths are read: no "never elaborated" warning
    ops = []
    for op in program.ops:
        entry = {"name": op.name, "kind": op.kind if isinstance(op, MatmulOp) else "avgpool2d" if op.avg else "maxpool2d",
                 "in_shape": list(op.in_shape), "out_shape": list(op.out_shape), "in_buf": op.in_buf, "out_buf": op.out_buf,
                 "cycles_analytic": model.per_op[op.name]}
        if isinstance(op, MatmulOp):
            entry.update(positions=op.positions, rows=op.rows, cols=op.cols, row_tiles=op.n_rt, col_tiles=op.n_ct,
                         folds=op.n_rt * op.n_ct, macs=sum(op.macs_per_fold) * op.positions)
            if op.grouped:    # (a depthwise convolution: its array utilisation, useful products per PE-beat)
                entry.update(grouped=True, pe_utilization=round(sum(op.macs_per_fold) / (op.n_rt * op.n_ct * R * C), 4))
            if op.window != (1, 1):
                entry.update(fused_pool=written_size(*op.window), conv_out_shape=list(op.conv_shape),
                             fused_pool_kind="avgpool2d" if op.pool_avg else "maxpool2d")
        else:
            entry.update(pool=written_size(*op.window), channel_tiles=op.n_ct)
        ops.append(entry)
    acc, wb = program.acc_bits + 2, program.weight_bits
    n_tiles = sum(len(o.tiles) for o in program.matmuls())
    roms = {b: len(accel.plan.wimgs[b]) for b in accel.plan.wwidths}     # (tiles in each width's ROM)
    wbits = sum(R * C * b * n for b, n in roms.items())
    n_rt = sum(len(o.row_table) for o in program.matmuls())
    n_ct = sum(o.n_ct for o in program.matmuls())
    return {
        "top": TOP_NAME,
        "sim_models": [MODELS_FILE],
        "array": {"rows": R, "cols": C, "dataflow": "ws", "acc_bits": acc, "weight_bits": wb, "x_bits": 9},
        "pipeline": {"matmul_drain_cycles": accel.mm_drain, "pool_drain_cycles": accel.pool_drain},
        "ops": ops,
        "memories": {
            # weights packed at their layer's width, R x C of them a word, one ROM per width
            "weights": {"words": n_tiles, "bytes": -(-wbits // 8), "bits": wbits, "weight_bits": wb,
                        "roms": [{"weight_bits": b, "bits_per_word": R * C * b, "words": n} for b, n in roms.items()]},
            "row_table": {"words": n_rt, "bits_per_word": R * accel.plan.entry},
            "bias": {"words": n_ct, "bits_per_word": C * acc},
            "psum": {"words": max((o.positions for o in program.matmuls()), default=1), "bits_per_word": C * acc},
            # ping-pong buffers 0 and 1, the image buffer's two slots, and a third activation buffer (3) where a
            # residual add's other input waits; each in ``copies`` copies
            # (the ping-pong buffers' lanes hold the hidden layers' widths; the image's lanes are bytes)
            "activations": {"buffers": [*program.buf_depth[:2], 2 * program.image_stride, *program.buf_depth[3:]],
                            "bits_per_word": C * program.act_bits, "lane_bits": program.act_bits,
                            "image_bits_per_word": C * 8,
                            "copies": list(program.copies), "image_slots": 2},
        },
        "memory_shapes": {n: {"bits": w, "words": d} for n, (w, d) in accel.memory_shapes(single_port).items()},
        "counters": counter_names(o.name for o in program.ops),
        "host_port": {"data_bits": 32, "read_latency": 1, "registers": accel.host_map()},
        "logits": {"count": program.n_logits, "frac": program.logit_frac},
        "input_shape": list(program.input_shape),
        "cycles_analytic": {"total": model.total, "per_op": model.per_op, "beats": model.beats, "macs": model.macs,
                            "pe_utilization": model.pe_utilization},
        "activity_analytic": activity_model(program),
    }


def write_verilog(top: Accelerator, out_dir: Path, emitter: str = "prunehw", device: str = DEFAULT_DEVICE) -> Path:
    """Write ``top``'s ECP5 flavour for ``device`` as ``<out_dir>/prunehw_top.v`` with the primitives' simulation
    models beside it (a PE beyond the part's multipliers multiplies in the fabric).

    The same file is what cocotb simulates and what yosys synthesises (see :mod:`prunehw.hw.target.ecp5`).
    """
    platform = target_device(device).platform()
    text = to_verilog(top, TOP_NAME, platform, emitter)
    if isinstance(platform, ECP5):
        write_sim_models(out_dir)
    return write_bytes(Path(out_dir) / f"{TOP_NAME}.v", text.encode())


def check_counters_fit(activity: dict[str, int], bits: int = COUNTER_BITS) -> None:
    """Refuse (before any Verilog is written) a network whose per-image counts would wrap the host port's
    ``bits``-bit counters: a wrapped counter would still be compared with the model, and misread."""
    over = {k: v for k, v in activity.items() if v >= 1 << bits}
    if over:
        name, value = max(over.items(), key=lambda kv: kv[1])
        raise ConfigError(f"counter {name!r} would reach {value} in one inference, beyond the accelerator's {bits}-bit "
                          f"counters; allowed: networks whose counts stay below {1 << bits}")


def check_memory_fits(program: Program, where: str = "the network", device: str = DEFAULT_DEVICE) -> None:
    """Refuse (one line, before any Verilog) a network whose accelerator memories (weight tiles, row tables,
    biases, partial sums, every copy of the activation buffers) hold more bits than ``device``'s block RAM,
    naming the layer with the most weight bits and the limit."""
    dev = target_device(device)
    accel = Accelerator(program=program)
    accel._MustUse__silence = True     # only its memory shapes are read
    bits = memory_bits(accel.memory_shapes())
    if bits > dev.ram_bits:
        R, C = program.rows, program.cols
        big = max(program.matmuls(), key=lambda o: o.n_rt * o.n_ct)
        raise ConfigError(f"{where}: its accelerator on the {R}x{C} array needs {bits / 1e6:.2f} Mbit of memory "
                          f"(layer {big.name!r} alone {big.n_rt * big.n_ct * R * C * program.weight_bits / 1e6:.2f} Mbit of weight tiles), "
                          f"more than the {dev.name}'s {dev.ram_bits / 1e6:.2f} Mbit of block RAM; allowed: networks "
                          f"whose memories fit it (fewer or pruned weights, smaller maps)")


def generate_verilog(contract, array: ArrayConfig, out_dir: Path, emitter: str = "prunehw",
                     device: str = DEFAULT_DEVICE) -> tuple[Path, Path, dict]:
    """Write ``<out_dir>/prunehw_top.v`` for ``device`` (by ``emitter``, see :data:`EMITTERS`) and
    ``accelerator.json``; returns their paths and the description. On a part with fewer multipliers than the
    array has PEs, the description's ``multipliers`` says how many multiply in the fabric. On a part whose memories
    hold only a smaller array (the iCE40UP5K's), the design is built on that array (:func:`array_for`) and the
    description names the ``device``."""
    dev = target_device(device)
    array = array_for(contract, array, device)
    program = program_for(contract, array)
    check_counters_fit(activity_model(program))
    check_memory_fits(program)
    top = Accelerator(program=program)
    out_dir = Path(out_dir)
    v = write_verilog(top, out_dir, emitter, device)
    desc = describe(program, top, single_port=bool(getattr(dev.platform(), "single_port_buffers", False)))
    if dev.family != "ecp5":           # (its Verilog instantiates no primitive, and names the part it is built for)
        desc.update(sim_models=[], device=dev.name)
        return v, write_json(out_dir / "accelerator.json", desc), desc
    split = multipliers(program.rows * program.cols, device)
    if split["lut"]:              # (absent where every PE has a DSP: the description of such a design as it was)
        desc["multipliers"] = {**split, "device": device}
    j = write_json(out_dir / "accelerator.json", desc)
    return v, j, desc
