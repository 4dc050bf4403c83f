"""A simple dual-port RAM built for the ECP5's block RAM timing: sub-memories no deeper than one block, outputs registered;
or, for a part with large single-port RAM (the iCE40 UltraPlus's SPRAM), the same interface on single-port memories."""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["BlockRAM", "READ_LATENCY", "SUB_DEPTH", "SUB_WIDTH"]

#: Deepest sub-memory: 512 words fit one DP16KD in every width configuration, so yosys never cascades
#: blocks in depth (a cascade puts a multiplexer right after the block RAM's slow clock-to-output).
SUB_DEPTH = 512
#: Widest sub-memory: the 36-bit port of a 512-word block. A wider memory is split into side-by-side
#: memories, so that yosys does not fold it into a narrower, deeper shape read through a multiplexer.
SUB_WIDTH = 36
#: Cycles from ``r_addr`` to ``r_data``: the block RAM read, then two registers. The first has no
#: other load, so the placer can put it beside the block RAM (whose clock-to-output already takes
#: most of a 10 ns cycle); the second carries the word to wherever it is used.
READ_LATENCY = 3


class BlockRAM(wiring.Component):
    """One write port, one read port; ``depth`` words of ``width`` bits, written in ``granularity``-bit lanes.

    The words are spread over ``ceil(depth / SUB_DEPTH)`` rows of memories
    of at most :data:`SUB_DEPTH` words (address bits above that pick the
    row), each row split across memories at most :data:`SUB_WIDTH` bits
    wide (whole write lanes); each memory's output is registered twice, and the registered outputs are
    selected by the registered upper address bits. So the only load of a
    block RAM output is one flip-flop, and the selection runs from
    flip-flops.

    Parameters
    ----------
    width, depth : int
        Word width in bits and number of words.
    granularity : int
        Write-enable lane width (``width`` must be a multiple of it).
    init : list of int
        Initial contents (ROM images), word by word; shorter lists are zero-filled.
    single_port : bool
        Build each part (below) as one single-port memory (``ram_style = "huge"``: the iCE40 UltraPlus's SPRAM,
        which has one address for reads and writes and no initial contents): the address is the write's in a
        cycle that writes the part and the read's otherwise, and a read in a cycle that writes the same part is
        not made (``r_data`` then keeps its word, like the SPRAM's output during a write). Its users never read
        and write one part in the same cycle: an op reads its input buffer and writes another, the host loads
        one image slot while the other is computed. The outputs are registered as in the dual-port build, so
        :data:`READ_LATENCY` is the same.
    parts : int
        With ``single_port``: the memories the words are split over by their top address bits (the image
        buffer's two slots), each a single-port memory of its own. A read and a write may be made in the same
        cycle where they address different parts.

    A read of the word being written in the same cycle is undefined on the
    FPGA: the memories carry yosys's ``no_rw_check``, so no bypass logic is
    built around the block RAM (yosys would otherwise emulate read-first
    behaviour with a multiplexer right after the block RAM's slow
    clock-to-output; that was the dense design's critical path). The
    simulated Verilog returns the old word; users must not depend on it. The
    accelerator never does: activations are read from one ping-pong buffer
    while the other is written, and a partial sum read in the cycle of its
    own write is replaced by the forwarded sum (``PSUM_FORWARD``).

    Members
    -------
    r_addr : In(range(depth))
        Read address; the word is on ``r_data`` :data:`READ_LATENCY` cycles later.
    r_en : In(1), init 1
        Read enable (the block RAM's clock enable): with it low the memories are
        not read and ``r_data`` shows the last word read, :data:`READ_LATENCY`
        cycles later.
    r_data : Out(width)
    w_addr : In(range(depth))
    w_data : In(width)
    w_en : In(width // granularity)
        One enable per lane; the write lands at the end of the cycle.
    """

    def __init__(self, *, width: int, depth: int, granularity: int | None = None, init=(), single_port: bool = False,
                 parts: int = 1):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, not {depth!r}")
        granularity = width if granularity is None else granularity
        if width % granularity:
            raise ValueError(f"width {width} is not a multiple of granularity {granularity!r}")
        if parts < 1 or parts & (parts - 1) or depth % parts or (parts > 1 and not single_port):
            self._MustUse__silence = True       # (refused: never to be elaborated)
            raise ValueError(f"parts must be a power of two dividing depth {depth}, and only single-port; not {parts!r}")
        if single_port and init:
            self._MustUse__silence = True
            raise ValueError("a single-port RAM has no initial contents (the SPRAM has none)")
        self.width, self.depth, self.granularity, self.init = width, depth, granularity, list(init)
        self.single_port, self.parts = single_port, parts
        self.n_sub = parts if single_port else -(-depth // SUB_DEPTH)
        super().__init__({
            "r_addr": In(range(max(depth, 2))), "r_en": In(1, init=1), "r_data": Out(width),
            "w_addr": In(range(max(depth, 2))), "w_data": In(width), "w_en": In(width // granularity),
        })

    @staticmethod
    def split(width: int, depth: int, granularity: int | None = None) -> dict[str, tuple[int, int]]:
        """{name: (width, words)} of each sub-memory of a ``width`` x ``depth`` RAM, in address order."""
        g = width if granularity is None or granularity == width else granularity
        chunk = width if g == width and width <= SUB_WIDTH else (SUB_WIDTH if g == width else max(g, SUB_WIDTH // g * g))
        widths = [min(chunk, width - c) for c in range(0, width, chunk)]
        return {f"sub{s}_{c}": (w, min(SUB_DEPTH, depth - s * SUB_DEPTH))
                for s in range(-(-depth // SUB_DEPTH)) for c, w in enumerate(widths)}

    @staticmethod
    def single_port_split(width: int, depth: int, parts: int = 1) -> dict[str, tuple[int, int]]:
        """{name: (width, words)} of each single-port memory of a ``width`` x ``depth`` RAM in ``parts`` parts (as
        ``single_port`` builds it)."""
        return {f"part{s}": (width, depth // parts) for s in range(parts)}

    def elaborate(self, platform):
        if self.single_port:
            return self._single_port()
        m = Module()
        lo = ceil_log2(SUB_DEPTH)
        g = self.granularity
        # no reset on the output registers: reset logic would sit between the block RAM and its register
        rows = []
        for s in range(self.n_sub):
            near, bit = [], 0
            for name, (w, words) in self.split(self.width, self.depth, g).items():
                if not name.startswith(f"sub{s}_"):
                    continue
                init = [(v >> bit) & ((1 << w) - 1) for v in self.init[s * SUB_DEPTH:s * SUB_DEPTH + words]]
                mem = Memory(shape=w, depth=max(words, 2), init=init + [0] * (max(words, 2) - len(init)),
                             attrs={"no_rw_check": 1})
                m.submodules[name] = mem
                rd = mem.read_port()
                m.d.comb += rd.en.eq(self.r_en)
                wr = mem.write_port(granularity=g if g < self.width else None)
                lanes = self.w_en[bit // g:(bit + w) // g] if g < self.width else self.w_en
                m.d.comb += [rd.addr.eq(self.r_addr[:lo]), wr.addr.eq(self.w_addr[:lo]), wr.data.eq(self.w_data[bit:bit + w])]
                if self.n_sub == 1:
                    m.d.comb += wr.en.eq(lanes)
                else:
                    with m.If(self.w_addr[lo:] == s):
                        m.d.comb += wr.en.eq(lanes)
                q = Signal(w, name=f"{name}_near", reset_less=True)
                m.d.sync += q.eq(rd.data)
                near.append(q)
                bit += w
            row = Signal(self.width, name=f"sub{s}_q", reset_less=True)
            m.d.sync += row.eq(Cat(*near))
            rows.append(row)
        self._select(m, rows, lo)
        return m

    def _select(self, m, rows, lo):
        """``r_data`` from the registered output of the row the read addressed (address bits ``lo`` and up)."""
        hi = [Signal(range(max(self.n_sub, 2)), name=f"hi{d}") for d in range(READ_LATENCY)]
        if self.n_sub > 1:
            m.d.sync += hi[0].eq(self.r_addr[lo:])
            m.d.sync += [hi[d].eq(hi[d - 1]) for d in range(1, READ_LATENCY)]
        m.d.comb += self.r_data.eq(Array(rows)[hi[-1]])

    def _single_port(self):
        m = Module()
        g, words = self.granularity, self.depth // self.parts
        lo = ceil_log2(max(words, 2))
        rows = []
        for s in range(self.parts):
            mem = Memory(shape=self.width, depth=max(words, 2), init=[], attrs={"ram_style": "huge"})
            m.submodules[f"part{s}"] = mem
            rd, wr = mem.read_port(), mem.write_port(granularity=g if g < self.width else None)
            here = self.w_en.any() if self.parts == 1 else self.w_en.any() & (self.w_addr[lo:] == s)
            addr = Signal(lo, name=f"part{s}_addr")
            m.d.comb += [addr.eq(Mux(here, self.w_addr[:lo], self.r_addr[:lo])), rd.addr.eq(addr), wr.addr.eq(addr),
                         rd.en.eq(self.r_en & ~here), wr.data.eq(self.w_data), wr.en.eq(Mux(here, self.w_en, 0))]
            near = Signal(self.width, name=f"part{s}_near", reset_less=True)
            row = Signal(self.width, name=f"part{s}_q", reset_less=True)
            m.d.sync += [near.eq(rd.data), row.eq(near)]
            rows.append(row)
        self._select(m, rows, lo)
        return m
