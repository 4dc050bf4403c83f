"""``prunehw board-run``'s host without a board: a missing port, a silent one and a board holding another design
each stop with one line saying what to do."""

import pytest

from prunehw.board import BoardError, board_run
from prunehw.hw.host import protocol as P


class FakePort:
    """A serial port whose board answers INFO with ``info`` (or nothing, when None)."""

    def __init__(self, info: P.BoardInfo | None):
        self.info, self.pending, self.closed = info, b"", False

    def write(self, data: bytes):
        if self.info is not None and data == P.request("INFO"):
            self.pending += P.reply(P.COMMANDS["INFO"], self.info.pack())

    def read(self, n: int) -> bytes:
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def close(self):
        self.closed = True


def test_no_board_at_the_port_is_one_clear_line(quick_flow):
    with pytest.raises(BoardError) as exc:
        board_run(quick_flow, "matrix-0.80", "/dev/prunehw-no-such-port", 2)
    msg = str(exc.value)
    assert msg.startswith("no board at /dev/prunehw-no-such-port: ") and "--port /dev/ttyUSB0" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("info, message", [
    (None, "no reply to INFO within 0.2 s: is the bitstream loaded"),
    (P.BoardInfo(0xDEADBEEF, 10, 30, (28, 28, 1), 50), "the board holds design 0xdeadbeef, not matrix-0.80's 0x"),
])
def test_a_silent_board_or_another_design_is_refused(quick_flow, info, message):
    port = FakePort(info)
    with pytest.raises(BoardError, match=message) as exc:
        board_run(quick_flow, "matrix-0.80", "fake", 2, timeout_s=0.2, open_port=lambda name, rate: port)
    assert "\n" not in str(exc.value) and port.closed
