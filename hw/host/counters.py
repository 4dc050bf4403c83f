"""The accelerator's performance counters, defined once: name, meaning, where the count comes from, width.

Everything else is derived from :data:`COUNTER_SPECS`: the RTL's counters and their host-port order
(:class:`~prunehw.hw.gateware.counters.Counters`), the host map in ``accelerator.json``, the board's
``COUNTERS`` reply, the analytic activity model's keys (:func:`~prunehw.hw.models.cycle_model.activity_model`)
and every expected counter vector the testbenches compare with
(:func:`~prunehw.hw.models.cycle_model.expected_counters`). After the counters, the host port holds one cycle
count per op (:func:`counter_names`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COUNTER_BITS", "COUNTER_SPECS", "COUNTERS", "EVENTS", "Counter", "counter_names"]

#: Every counter's width: a count that would reach ``2**COUNTER_BITS`` in one inference is refused before any
#: Verilog is written.
COUNTER_BITS = 32


@dataclass(frozen=True)
class Counter:
    """One performance counter.

    Parameters
    ----------
    name : str
        Its name in the host map, ``summary.json`` and the activity model.
    meaning : str
        What one count is.
    source : str
        ``"controller"`` (counted from the controller's registered state) or ``"event"`` (the number of
        memory-port enables or PE flags set in a cycle, summed).
    """

    name: str
    meaning: str
    source: str
    bits: int = COUNTER_BITS


#: The counters in host-port order.
COUNTER_SPECS = (
    Counter("total_cycles", "clock cycles from start to done", "controller"),
    Counter("beats", "beats issued into the array (one activation vector each)", "controller"),
    Counter("macs", "useful multiply-accumulates of the beats (valid rows x valid columns)", "controller"),
    Counter("weight_reads", "weight tiles read from a weight ROM (one per fold)", "event"),
    Counter("weight_bits_read", "bits of the weight tiles read (R x C weights at the layer's width each)", "event"),
    Counter("act_reads", "words read from the ping-pong activation buffers", "event"),
    Counter("image_reads", "words read from the image buffer", "event"),
    Counter("act_writes", "words written to the activation buffers (every copy)", "event"),
    Counter("psum_reads", "words read from the partial-sum memory", "event"),
    Counter("psum_writes", "words written to the partial-sum memory", "event"),
    Counter("bias_reads", "words read from the bias ROM", "event"),
    Counter("table_reads", "row-table entries read", "event"),
    Counter("mults", "PE multiplications (a valid beat meeting a non-zero weight)", "event"),
    Counter("mults_gated", "PE multiplications skipped (a valid beat meeting a zero weight)", "event"),
    Counter("wreg_writes", "weight, skew and delay register writes of the folds' weight loads", "event"),
)
COUNTERS = tuple(c.name for c in COUNTER_SPECS)
#: The counters that add each cycle's events; the others are counted from the controller.
EVENTS = tuple(c.name for c in COUNTER_SPECS if c.source == "event")


def counter_names(op_names) -> list[str]:
    """Every word the host port's counter block holds, in order: the counters, then ``cycles_<op>`` per op."""
    return [*COUNTERS, *(f"cycles_{op}" for op in op_names)]
