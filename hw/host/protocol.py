"""The host link's framed protocol over the serial port: its constants, and the host's side as pure functions.

One source for both ends: the board's link (:mod:`prunehw.hw.gateware.host_link`) is generated from these constants, and
every host (``prunehw board-run`` over pyserial, the cocotb testbench over the simulated line) frames requests
with :func:`request` and parses replies with :class:`ReplyParser`. No I/O here.

A request: ``0xA5``, command, payload length (2 bytes, little-endian), payload, checksum. A reply: ``0x5A``,
code (the command, or an error code), length, payload, checksum. The checksum makes the bytes after the sync
byte sum to 0 modulo 256. Commands:

- ``LOAD`` (``I``): the image, ``h * w * c`` bytes (uint8, pixel-major, channels innermost), into the
  accelerator's load slot; an empty reply. A bad checksum is answered after the payload was written: the load
  slot then holds a bad image until the next ``LOAD``.
- ``START`` (``S``): runs the network on the image loaded since the previous ``START``; an empty reply at once
  (``NOT_READY`` while the previous inference runs).
- ``LOGITS`` (``L``): waits for the running inference, then replies the logits (``n_logits`` 32-bit signed
  words); ``NOT_READY`` when nothing ran.
- ``COUNTERS`` (``C``): the performance counters of the last inference, then one cycle count per op (32-bit
  words, the accelerator's host-port order).
- ``INFO`` (``?``): what the board holds (:class:`BoardInfo`), for the host to check it talks to the design it
  expects.

Errors: a request with an unknown command or a length its command does not take is answered at once (``BAD_COMMAND``,
``BAD_LENGTH``), and the link then drops what follows until the line has been quiet for the timeout (the rest of
that frame); a frame that stalls for the timeout is answered ``TIMEOUT``; a wrong checksum ``BAD_CHECKSUM``. Bytes
outside a frame that are not the sync byte are ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["BAD_CHECKSUM", "BAD_COMMAND", "BAD_LENGTH", "COMMANDS", "ERRORS", "INFO_FORMAT", "MAGIC", "NOT_READY",
           "REPLY_SYNC", "REQUEST_SYNC", "TIMEOUT", "BoardInfo", "ProtocolError", "Reply", "ReplyParser",
           "checksum", "framing_errors", "reply", "request"]

REQUEST_SYNC = 0xA5
REPLY_SYNC = 0x5A
COMMANDS = {"LOAD": ord("I"), "START": ord("S"), "LOGITS": ord("L"), "COUNTERS": ord("C"), "INFO": ord("?")}
BAD_COMMAND, BAD_LENGTH, BAD_CHECKSUM, TIMEOUT, NOT_READY = 0xE0, 0xE1, 0xE2, 0xE3, 0xE4
ERRORS = {BAD_COMMAND: "bad command", BAD_LENGTH: "bad length", BAD_CHECKSUM: "bad checksum",
          TIMEOUT: "timeout inside a frame", NOT_READY: "not ready (an inference runs, or none ran)"}
MAGIC = b"PHW1"
#: INFO's payload: magic, design id, logits, counters (with the per-op cycles), image h, w, c, clock cycles per bit
INFO_FORMAT = "<4sIHHHHHH"


def framing_errors(image: bytes) -> dict[str, tuple[bytes, int]]:
    """The malformed requests a host-side test sends (``image``: a valid LOAD payload to cut short), each with the
    code the board must answer it with."""
    start = request("START")
    return {"bad_command": (bytes([REQUEST_SYNC, ord("X"), 0, 0, 0]), BAD_COMMAND),
            "bad_length": (request("LOAD", image[:5]), BAD_LENGTH),
            "bad_checksum": (start[:-1] + bytes([start[-1] ^ 0xFF]), BAD_CHECKSUM),
            "timeout": (request("INFO")[:3], TIMEOUT)}


class ProtocolError(RuntimeError):
    """A reply that breaks the framing, or an error code from the board; the message says which."""


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` plus itself sum to 0 modulo 256."""
    return -sum(data) & 0xFF


def _frame(sync: int, code: int, payload: bytes) -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes; allowed: at most 65535")
    body = bytes([code]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([sync]) + body + bytes([checksum(body)])


def request(command: str, payload: bytes = b"") -> bytes:
    """The bytes of a request: ``command`` a name of :data:`COMMANDS`."""
    if command not in COMMANDS:
        raise ValueError(f"command {command!r} is unknown; allowed: {', '.join(COMMANDS)}")
    return _frame(REQUEST_SYNC, COMMANDS[command], payload)


def reply(code: int, payload: bytes = b"") -> bytes:
    """The bytes of a reply (what the board sends; the reference the tests compare the link with)."""
    return _frame(REPLY_SYNC, code, payload)


@dataclass(frozen=True)
class Reply:
    code: int
    payload: bytes

    @property
    def error(self) -> str | None:
        """The error's name when the code is an error code, else None."""
        return ERRORS.get(self.code) if self.code >= 0xE0 else None

    def words(self) -> list[int]:
        """The payload as signed 32-bit little-endian words."""
        return list(struct.unpack(f"<{len(self.payload) // 4}i", self.payload))


@dataclass(frozen=True)
class BoardInfo:
    """What INFO reports: the design's id (CRC-32 of its numeric contract), its sizes, and the serial divisor."""
    design_id: int
    n_logits: int
    n_counters: int
    shape: tuple[int, int, int]
    divisor: int

    def pack(self) -> bytes:
        return struct.pack(INFO_FORMAT, MAGIC, self.design_id, self.n_logits, self.n_counters, *self.shape, self.divisor)

    @classmethod
    def unpack(cls, payload: bytes) -> "BoardInfo":
        if len(payload) != struct.calcsize(INFO_FORMAT) or payload[:4] != MAGIC:
            raise ProtocolError(f"INFO reply of {len(payload)} bytes starting {payload[:4]!r}; expected "
                                f"{struct.calcsize(INFO_FORMAT)} bytes starting {MAGIC!r}")
        _, design, logits, counters, h, w, c, div = struct.unpack(INFO_FORMAT, payload)
        return cls(design, logits, counters, (h, w, c), div)


class ReplyParser:
    """Bytes in, replies out: ``feed(data)`` returns the replies completed by ``data`` (bytes before a sync byte
    are skipped); a reply whose checksum is wrong raises :class:`ProtocolError`."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Reply]:
        self._buf += data
        out = []
        while True:
            start = self._buf.find(REPLY_SYNC)
            if start < 0:
                self._buf.clear()
                return out
            del self._buf[:start]
            if len(self._buf) < 4:
                return out
            n = struct.unpack("<H", self._buf[2:4])[0]
            if len(self._buf) < 5 + n:
                return out
            frame = bytes(self._buf[:5 + n])
            del self._buf[:5 + n]
            if sum(frame[1:]) & 0xFF:
                raise ProtocolError(f"reply with a bad checksum: {frame[:8].hex()}... ({len(frame)} bytes)")
            out.append(Reply(frame[1], frame[4:4 + n]))

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole reply."""
        return len(self._buf)
