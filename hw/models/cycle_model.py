"""The analytic cycle model: cycles of every op of a program, predicted from shapes and the array size.

It counts the controller's schedule (one beat per cycle, no bubbles between
folds, a fixed drain between ops), so the RTL's counters must equal it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from prunehw.hw.compile.program import MatmulOp, Program
from prunehw.hw.host.counters import COUNTERS

__all__ = ["divides", "drain_cycles", "op_cycles", "cycle_model", "activity_model", "expected_counters", "CycleReport"]

#: Cycles from a matmul beat's issue to its last effect, counted stage by stage from the
#: pipeline as documented (not read from the generator). Every block RAM read takes 3 cycles
#: (the read, a register beside the RAM, a register towards its users). Feed: row table read
#: (3), activation address register (1), bank read (3), lane select register (1) = 8. Array:
#: R - 1 of input skew, 3 in the last PE of a column (operand, product and sum registers),
#: C - 1 of output deskew. Bottom: the sum register, the rounding register, the saturated
#: word's register and the pooling window's running-maximum register, whose write lands at
#: the end of that cycle. The next op may read one
#: cycle after its own issue, so the drain after the last issue is one less than that depth.
FEED_DEPTH = 8
PE_DEPTH = 3
BOTTOM_DEPTH = 4
#: Pooling: address register (1), bank read (3), the word read's register (1), running maximum and the
#: window's register (1).
POOL_DEPTH = 6
#: A design with a residual add: its bottom's two more registers (the sum with the add's other input and its
#: rounding, then the shift and saturation), in every matmul op.
ADD_DEPTH = 2
#: A design that averages over a window whose size is not a power of two: the window's sum and maximum are
#: registered before the division, then the sum's sign and magnitude, its products with the pieces of the
#: reciprocal, and their sum, in every op (the word of an op that does not average waits as long). In a design with
#: a residual add the matmul ops' word passes the add stages in the first of these registers, so its bottom is three
#: deeper than the add alone; pooling ops are four deeper.
DIVIDE_DEPTH = 4
POOL_DRAIN = POOL_DEPTH - 1


def drain_cycles(rows: int, cols: int, residual: bool = False, divides: bool = False) -> int:
    """Idle cycles after a matmul op's last beat is issued (see the module constants); ``residual``: in a design
    with a residual add (whose bottom is :data:`ADD_DEPTH` deeper in every op); ``divides``: in a design that
    averages over a window size that is not a power of two (:data:`DIVIDE_DEPTH`)."""
    divide = DIVIDE_DEPTH if divides else 0
    deeper = ADD_DEPTH + max(divide - 1, 0) if residual else divide
    return FEED_DEPTH + (rows - 1) + PE_DEPTH + (cols - 1) + BOTTOM_DEPTH + deeper - 1


def op_cycles(op, rows: int, cols: int, residual: bool = False, divides: bool = False) -> int:
    if isinstance(op, MatmulOp):
        return op.n_ct * op.n_rt * op.positions + drain_cycles(rows, cols, residual, divides)
    return op.out_pix * op.n_ct * op.window[0] * op.window[1] + POOL_DRAIN + (DIVIDE_DEPTH if divides else 0)


def divides(program: Program) -> bool:
    """Whether some pooling of ``program`` averages over a window whose size is not a power of two."""
    sizes = {op.window[0] * op.window[1] for op in program.ops
             if (op.pool_avg if isinstance(op, MatmulOp) else op.avg)}
    return any(n & (n - 1) for n in sizes)


@dataclass
class CycleReport:
    per_op: dict[str, int]
    total: int
    beats: int
    macs: int

    @property
    def pe_utilization(self) -> float:
        return self.macs / self.pe_cycles if self.pe_cycles else 0.0

    pe_cycles: int = 0


def cycle_model(program: Program) -> CycleReport:
    """Per-op cycles, total cycles (start to done), beats (array occupancy) and useful MACs."""
    R, C = program.rows, program.cols
    residual = any(op.add for op in program.matmuls())
    per_op = {op.name: op_cycles(op, R, C, residual, divides(program)) for op in program.ops}
    beats = sum(op.n_ct * op.n_rt * op.positions for op in program.matmuls())
    macs = sum(sum(op.macs_per_fold) * op.positions for op in program.matmuls())
    total = sum(per_op.values())
    return CycleReport(per_op, total, beats, macs, pe_cycles=total * R * C)


def _on_map(op: MatmulOp, ky: int, kx: int) -> int:
    """Computed positions at which kernel tap (ky, kx) of a convolution falls on its input map, not on padding:
    a count per axis (output rows y < out_h * window height, input row y * stride + ky - pad_top in [0, h), with
    that axis's stride), multiplied."""
    (h, w), (pt, pl), (sh, sw), (PH, PW) = op.in_shape[:2], op.pad, op.stride, op.window

    def along(n_out: int, size: int, k: int, pad: int, s: int) -> int:
        return sum(0 <= y * s + k - pad < size for y in range(n_out))

    return along(op.out_shape[0] * PH, h, ky, pt, sh) * along(op.out_shape[1] * PW, w, kx, pl, sw)


def activity_model(program: Program) -> dict[str, int]:
    """Every activity counter of the RTL (:data:`~prunehw.hw.host.counters.COUNTERS`) for one image, predicted from the schedule.

    Per matmul fold (col tile ``ct``, row tile ``rt``) the controller issues one
    beat per computed output position (with fused pooling, only the positions
    the pooling windows cover): a weight tile is read once per fold, each beat
    reads its valid rows' activations, starts from the bias on the first row
    tile and from the partial sum otherwise, writes a partial sum unless it is
    the last row tile, and the last row tile writes one output word per
    pooling window, i.e. per output pixel (the last layer keeps logits in
    registers instead). Pooling reads one word per window
    element and writes one per output pixel. Counted as the RTL counts them, at
    the memory ports: a word is written to every copy of the output buffer,
    a beat reads (``act_reads``, or ``image_reads`` from
    the image buffer) one word of an input buffer kept in one copy and one word
    per valid row of a replicated one (whether a buffer is replicated is
    decided here from the row tables, independently of the program's own
    decision, which the RTL follows), a row table entry and a weight tile
    (R x C weights of the layer's width: ``weight_bits_read``) are read once per fold. In
    the array every PE sees every beat and multiplies unless its weight is 0
    (then it holds its operand: ``mults_gated``); each fold's load writes the
    PEs' weight registers and the weight skew and delay registers once. The
    image load (the host's transfer, which may overlap the previous
    inference) is not counted.
    """
    rep = cycle_model(program)
    R, C = program.rows, program.cols
    act = {**dict.fromkeys(COUNTERS, 0), "total_cycles": rep.total, "beats": rep.beats, "macs": rep.macs}
    # loading one fold's weight tile writes every PE's weight register and, in row i, i skew stages
    # of C bytes and the delay stages of lanes 1 .. C-1 (lane j has j of them)
    wreg_per_fold = R * C + sum(i * C for i in range(R)) + R * sum(range(C))
    # a buffer needs R copies when some beat reading it gathers rows from more than one word: a row
    # tile whose valid rows name different word offsets, or any row tile of a packed image (whose
    # pixels share words only by position)
    def gathers(o) -> bool:
        return isinstance(o, MatmulOp) and ((o.in_buf == 2 and program.image_pack > 1) or
                                            any(len({off for off, _, v in t if v}) > 1 for t in o.row_table))

    multi = {b: any(gathers(o) for o in program.ops if o.in_buf == b) for b in range(len(program.buf_depth))}
    for op in program.ops:
        if isinstance(op, MatmulOp):
            M = op.positions
            act["weight_reads"] += op.n_ct * op.n_rt
            act["weight_bits_read"] += op.n_ct * op.n_rt * R * C * op.weight_bits   # a tile at the layer's width
            act["table_reads"] += op.n_ct * op.n_rt
            act["wreg_writes"] += op.n_ct * op.n_rt * wreg_per_fold
            # every PE sees every beat: it multiplies when its weight is not zero, else holds its operand
            nonzero = sum(int((t != 0).sum()) for t in op.tiles) * M
            act["mults"] += nonzero
            act["mults_gated"] += op.n_ct * op.n_rt * M * R * C - nonzero
            # a row whose tap falls on zero padding reads nothing (padded convolutions): each row reads once per
            # position its tap is on the map; a buffer kept in one copy is read once a beat for the row tile
            # (whose rows share one pixel, hence one tap)
            rows = [(rt, i) for rt, t in enumerate(op.row_table) for i, (_, _, v) in enumerate(t) if v]
            if not multi[op.in_buf]:
                rows = [(rt, i) for rt, i in rows if i == 0]
            reads = "image_reads" if op.in_buf == 2 else "act_reads"
            # (a grouped op's table has each column tile's row tiles: every entry is read by its own column tile)
            act[reads] += (1 if op.grouped else op.n_ct) * sum(_on_map(op, *op.row_taps[rt][i]) if op.kind == "conv2d"
                                                               else M for rt, i in rows)
            act["bias_reads"] += op.n_ct * M
            act["psum_reads"] += op.n_ct * (op.n_rt - 1) * M
            act["psum_writes"] += op.n_ct * (op.n_rt - 1) * M
            act["act_writes"] += 0 if op.last else op.n_ct * op.out_pix * (R if multi[op.out_buf] else 1)
            # a residual add reads its other input once for each word written, from one copy
            act["act_reads"] += op.n_ct * op.out_pix if op.add else 0
        else:
            act["image_reads" if op.in_buf == 2 else "act_reads"] += op.out_pix * op.n_ct * op.window[0] * op.window[1]
            act["act_writes"] += op.out_pix * op.n_ct * (R if multi[op.out_buf] else 1)
    return act


def expected_counters(program: Program) -> list[int]:
    """What the host port's counter block must read after any inference, in its order
    (:func:`~prunehw.hw.host.counters.counter_names`): the activity counters, then each op's cycles."""
    activity, per_op = activity_model(program), cycle_model(program).per_op
    return [activity[k] for k in COUNTERS] + [per_op[op.name] for op in program.ops]

