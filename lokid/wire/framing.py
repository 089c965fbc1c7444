"""Length-prefixed framing: a 4-byte big-endian length, then one msgpack message.

`FrameDecoder` is sans-I/O: feed it whatever bytes a read returned, take out
whole frames. The daemon (trio) and the blocking clients share it.
"""

import struct

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 16 * 1024 * 1024


class FrameTooLarge(Exception):
    """A length prefix announced more than the limit; the stream cannot resync."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


def encode_frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies.

    A length over the limit poisons the decoder: the stream has no recoverable
    boundary after it, so the connection must be closed. The frames that came
    before it in the same read are still returned (they deserve their answers);
    `error` then holds the `FrameTooLarge`, and any later `feed` raises it.
    """

    __slots__ = ("_buf", "_limit", "_need", "error")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._limit = max_frame
        self._need: int | None = None
        self.error: FrameTooLarge | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            raise self.error
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while True:
            if self._need is None:
                if end - pos < 4:
                    break
                (length,) = HEADER.unpack_from(buf, pos)
                if length > self._limit:
                    self.error = FrameTooLarge(length, self._limit)
                    buf.clear()
                    return frames
                self._need = length
                pos += 4
            if end - pos < self._need:
                break
            frames.append(bytes(buf[pos : pos + self._need]))
            pos += self._need
            self._need = None
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame (a truncated frame at EOF)."""
        return len(self._buf) + (4 if self._need is not None else 0)
