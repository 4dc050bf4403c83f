"""Single faults the generator can build into a copy of the accelerator, for the mutation campaign.

Each is a deliberate, realistic design error; the verification must catch
every one (a logit differing from the golden model, or a counter differing
from the analytic model, on the campaign's images). A fault changes the
value at one named point of the datapath (:mod:`~prunehw.hw.gateware.taps`), at the
instances its ``applies`` selects; the production design passes every point
through unchanged, so it holds no fault logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from amaranth import Cat, Const, Mux, Value, ValueCastable
from amaranth.lib import data

from prunehw.hw.compile.program import MatmulOp
from prunehw.hw.gateware.taps import Taps

__all__ = ["FAULTS", "Fault", "FaultTaps", "SelectTaps"]


def _always(where: dict) -> bool:
    return True


def _at(row, col):
    """A PE chosen by the array size: ``row``/``col`` map (rows, cols) to an index."""
    return lambda w: (w["row"], w["col"]) == (row(w["rows"]), col(w["cols"]))


def _everywhere(program) -> str | None:
    return None


@dataclass(frozen=True)
class Fault:
    description: str
    point: str                                      # the tap (see the blocks' ``taps(...)`` calls)
    change: Callable                                # (value, where) -> the faulty value
    applies: Callable[[dict], bool] = _always       # which instances of the point
    #: (program) -> None when the design has what the fault breaks, else why it cannot matter there (the fault
    #: is then equivalent to the design by construction: no stimulus can tell them apart)
    absent: Callable = _everywhere


def _no_idle_gather_rows(program) -> str | None:
    """The feeder's per-row read enables only differ from "every row" where a beat reads a replicated buffer
    (one port per row) with rows that are invalid (a short last row tile) or fall on padding."""
    for op in program.matmuls():
        if program.copies[op.in_buf] > 1 and (op.padded or any(not v for row in op.row_table for _, _, v in row)):
            return None
    return "no beat reads a replicated buffer with an idle row (every such row tile is full and on the map)"


def _no_max_pooling(program) -> str | None:
    """The pooling's comparison only matters where an op takes the maximum of a window of more than one value."""
    for op in program.ops:
        avg = op.pool_avg if isinstance(op, MatmulOp) else op.avg
        if not avg and op.window[0] * op.window[1] > 1:
            return None
    return "no op takes a maximum (every pooling averages)"


def _swap01(rows):
    return [rows[1], rows[0], *rows[2:]] if len(rows) > 1 else rows


FAULTS: dict[str, Fault] = {
    "pe_psum_stuck0_bit3": Fault("PE(0,0) partial-sum output bit 3 stuck at 0", "pe.psum",
                                 lambda v, w: v & ~(1 << 3), _at(lambda R: 0, lambda C: 0)),
    "pe_psum_stuck1_bit0": Fault("PE(R-1,C-1) partial-sum output bit 0 stuck at 1", "pe.psum",
                                 lambda v, w: v | 1, _at(lambda R: R - 1, lambda C: C - 1)),
    # (the sign bit is the register's top bit: bit 7 of an 8-bit weight, bit 3 of a 4-bit one)
    "pe_weight_sign_stuck0": Fault("PE(1,1) weight register sign bit stuck at 0", "pe.weight_in",
                                   lambda v, w: Cat(v[:-1], Const(0, 1)).as_signed(),
                                   _at(lambda R: min(1, R - 1), lambda C: min(1, C - 1))),
    "pe_gate_stale": Fault("every PE gates a load beat on the old weight's zero flag instead of the new weight's", "pe.gate",
                           lambda v, w: w["held"]),
    "pe_mult_flag_stuck0": Fault("PE(R-1,C-1) never reports a multiply to the activity counters", "pe.mult",
                                 lambda v, w: Const(0, 1), _at(lambda R: R - 1, lambda C: C - 1)),
    "acc_stuck1_bit12": Fault("bottom accumulator lane 1 bit 12 stuck at 1", "bottom.sum",
                              lambda v, w: v | (1 << 12), lambda w: w["lane"] == 1),
    "ctrl_positions_off_by_one": Fault("controller ends each fold one output position early", "ctrl.positions_limit",
                                       lambda v, w: v - 1),
    "ctrl_row_tiles_off_by_one": Fault("controller treats the second-to-last row tile as the last", "ctrl.row_tiles_limit",
                                       lambda v, w: v - 1),
    "ctrl_col_tiles_off_by_one": Fault("controller skips the last column tile", "ctrl.col_tiles_limit", lambda v, w: v - 1),
    "im2col_row_step_off_by_one": Fault("im2col base pixel jumps one pixel too far at each output row", "ctrl.window_row_step",
                                        lambda v, w: v + 1),
    "im2col_lane_swap": Fault("feeder reads lane c^1 instead of c", "feed.lane", lambda v, w: v ^ 1,
                              lambda w: w["cols"] > 1),
    "requant_no_rounding": Fault("requantization truncates instead of rounding half up", "requant.half", lambda v, w: 0),
    "requant_no_saturation": Fault("requantization wraps instead of saturating", "requant.saturated",
                                   lambda v, w: w["unsaturated"][:8]),
    # (dropping the ReLU alone is an equivalent mutant: saturating to an unsigned range clamps negatives to 0)
    "requant_signed_range": Fault("requantization saturates unsigned outputs to the signed range [-128, 127]",
                                  "requant.signed_range", lambda v, w: True),
    "requant_shift_plus_one": Fault("requantization shifts one bit too far", "requant.shift", lambda v, w: v + 1),
    "bias_dropped": Fault("the first row tile starts from 0 instead of the bias", "bottom.bias", lambda v, w: 0),
    "psum_dropped": Fault("later row tiles start from 0 instead of the stored partial sum", "bottom.partial_sum",
                          lambda v, w: 0),
    "psum_not_forwarded": Fault("a row tile returning within 4 beats (PSUM_FORWARD) reads the stale partial sum instead of "
                                "the forwarded one", "bottom.forwarded_sum", lambda v, w: w["memory"]),
    "act_write_addr_bit0_flip": Fault("activation write address bit 0 inverted", "bottom.write_address", lambda v, w: v ^ 1),
    "act_read_addr_bit1_flip": Fault("row 3's activation read address bit 1 inverted", "feed.address", lambda v, w: v ^ 2,
                                     lambda w: w["row"] == 3 % w["rows"]),
    "pool_window_short": Fault("max pooling (fused or a pass of its own) ends each window one column early",
                               "ctrl.window_x_limit", lambda v, w: v - 1),
    "pool_min": Fault("max pooling (fused or a pass of its own) keeps the minimum instead of the maximum", "pool.bigger",
                      lambda v, w: ~v, absent=_no_max_pooling),
    "weight_rows_swapped": Fault("weight tile rows 0 and 1 swapped on the way into the array", "feed.weight_rows",
                                 lambda v, w: _swap01(v)),
    "skew_row1_short": Fault("row 1 of the array is skewed by 0 cycles instead of 1", "array.skew_depth",
                             lambda v, w: v - 1, lambda w: w["row"] == 1),
    "image_slot_not_swapped": Fault("start does not hand the next load to the other image slot: the next image "
                                    "overwrites the one being computed", "top.next_load_slot", lambda v, w: w["held"]),
    "feed_read_ignores_row_valid": Fault("the feeder reads the input buffer for every row of a beat, valid or not "
                                         "(results unchanged; the extra reads cost energy)", "feed.read_enable",
                                         lambda v, w: w["beat"], absent=_no_idle_gather_rows),
    "logits_swapped": Fault("logits 0 and 1 swapped on the output", "bottom.logit_index",
                            lambda v, w: 1 - v if v < 2 else v),
}


class FaultTaps(Taps):
    """The hook with one fault built in: its point's value is changed where the fault applies."""

    def __init__(self, name: str):
        if name not in FAULTS:
            raise ValueError(f"fault {name!r} is unknown; allowed: {', '.join(FAULTS)}")
        self.name, self.fault = name, FAULTS[name]

    def __call__(self, point: str, value, **where):
        f = self.fault
        if point == f.point and f.applies(where):
            return f.change(value, where)
        return value


class SelectTaps(Taps):
    """The hook with many faults built in at once, one chosen at run time: the mutation campaign's shared build.

    Fault ``i`` of ``names`` (1-based) is active while the accelerator's ``fault_select`` input equals ``i``; 0
    is the production behaviour. A point whose value is an Amaranth value gets a multiplexer per fault that
    applies there (elementwise for a list of values). A point whose value is a Python constant fixes the
    design's structure (a register chain's depth, an index), which no multiplexer can choose: the faults that
    meet one are left out of this build and listed in ``static``, to be built one by one with
    :class:`FaultTaps`.
    """

    def __init__(self, names: list[str]):
        unknown = [n for n in names if n not in FAULTS]
        if unknown:
            raise ValueError(f"fault {unknown[0]!r} is unknown; allowed: {', '.join(FAULTS)}")
        self.names = list(names)
        self.static: set[str] = set()
        self.select = None  # the accelerator's ``fault_select`` port, bound before elaboration

    def bind(self, port) -> None:
        """Take ``port`` (the accelerator's ``fault_select`` input) as the selection."""
        self.select = port

    @property
    def selectable(self) -> list[str]:
        """The faults this build can switch on (known once the design has been elaborated)."""
        return [n for n in self.names if n not in self.static]

    def index(self, name: str) -> int:
        """The ``fault_select`` value that switches ``name`` on."""
        return self.names.index(name) + 1

    def __call__(self, point: str, value, **where):
        for i, name in enumerate(self.names, start=1):
            f = FAULTS[name]
            if point != f.point or not f.applies(where):
                continue
            if isinstance(value, list) and all(isinstance(v, (Value, ValueCastable)) for v in value):
                changed = f.change(value, where)
                value = [_choose(self.select == i, c, v) for c, v in zip(changed, value)]
            elif isinstance(value, (Value, ValueCastable)):
                value = _choose(self.select == i, f.change(value, where), value)
            else:
                self.static.add(name)
        return value


def _choose(on, faulty, value):
    """``faulty`` while ``on``, else ``value``; a structured value (a ``lib.data`` view) keeps its layout."""
    if isinstance(value, data.View):
        raw = Value.cast(value)
        return data.View(value.shape(), Mux(on, Value.cast(faulty), raw)[:len(raw)])
    return Mux(on, faulty, value)
