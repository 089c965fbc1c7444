"""The sans-I/O frame decoder: splits, joins and limits."""

import msgspec
import pytest

from lokid.wire import FrameDecoder, FrameTooLarge, Request, encode_frame


def frame(obj) -> bytes:
    return encode_frame(msgspec.msgpack.encode(obj))


def test_a_frame_split_across_reads_comes_out_whole():
    data = frame([0, 1, "ping", {}])
    decoder = FrameDecoder()
    out = []
    for i in range(len(data)):
        out += decoder.feed(data[i : i + 1])
    assert out == [data[4:]]
    assert decoder.pending == 0


def test_two_frames_in_one_read():
    a, b = frame([0, 1, "ping", {}]), frame([0, 2, "hello", {"client": "x"}])
    assert FrameDecoder().feed(a + b) == [a[4:], b[4:]]


def test_a_length_over_the_limit_is_refused_before_reading_the_body():
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(b"\x00\x00\x00\x0b") == []
    assert (decoder.error.length, decoder.error.limit) == (11, 10)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"more")  # poisoned: no boundary to resync on


def test_frames_before_an_oversized_length_in_the_same_read_still_come_out():
    good = frame([0, 1, "ping", {}])
    decoder = FrameDecoder(max_frame=64)
    assert decoder.feed(good + b"\xff\xff\xff\xff") == [good[4:]]
    assert decoder.error is not None and decoder.error.length == 0xFFFFFFFF


def test_a_truncated_frame_stays_pending():
    data = frame([0, 1, "ping", {}])
    decoder = FrameDecoder()
    assert decoder.feed(data[:-1]) == []
    assert decoder.pending == len(data) - 4 - 1 + 4


def test_request_encodes_as_the_msgpack_rpc_array():
    body = msgspec.msgpack.encode(Request(7, "ping", msgspec.Raw(b"\x80")))
    assert msgspec.msgpack.decode(body) == [0, 7, "ping", {}]
