"""launchd socket activation, on Linux: the ctypes calls run against a libSystem stand-in.

The stand-in is a real C-callable function (CFUNCTYPE) that hands out a malloc'd fd
array and libc's real `free`, so the marshalling lokid does for
`launch_activate_socket` is exercised exactly; only launchd itself is missing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from functools import partial

import pytest
import trio

from lokictl import Client
from lokid.app import build_app, build_daemon
from lokid.service.activation import ActivationError
from lokid.service.launchd import ACTIVATE_ARGTYPES, activate_socket, from_launchd
from lokid.settings import Settings

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.free.restype = None

ActivateProto = ctypes.CFUNCTYPE(ctypes.c_int, *ACTIVATE_ARGTYPES)


class FakeLibSystem:
    """`launch_activate_socket` as launchd would answer it for the given Sockets entries."""

    def __init__(self, sockets: dict[str, list[int]], error: int = 0) -> None:
        self.sockets = sockets
        self.error = error
        self.handed_out: list[int] = []
        self.freed: list[int] = []
        self.launch_activate_socket = ActivateProto(self._activate)

    def _activate(self, name: bytes, fds_out, count_out) -> int:
        if self.error:
            return self.error
        fds = self.sockets.get(name.decode())
        if fds is None:
            return errno.ENOENT
        mem = libc.malloc(ctypes.sizeof(ctypes.c_int) * len(fds))
        array = ctypes.cast(mem, ctypes.POINTER(ctypes.c_int))
        for i, fd in enumerate(fds):
            array[i] = fd
        fds_out[0] = array
        count_out[0] = len(fds)
        self.handed_out.append(mem)
        return 0

    def free(self, pointer) -> None:
        address = ctypes.cast(pointer, ctypes.c_void_p).value
        self.freed.append(address)
        libc.free(address)


def test_activate_socket_reads_the_array_and_frees_it():
    lib = FakeLibSystem({"lokid": [7, 9]})
    assert activate_socket(lib, "lokid") == [7, 9]
    assert lib.freed == lib.handed_out != []


@pytest.mark.parametrize("code", [errno.ESRCH, errno.ENOENT])
def test_not_started_by_launchd_means_no_inherited_socket(code):
    assert from_launchd(FakeLibSystem({}, error=code)) is None


def test_a_missing_sockets_entry_means_no_inherited_socket():
    assert from_launchd(FakeLibSystem({"other": [5]})) is None


def test_other_launchd_errors_are_reported():
    with pytest.raises(ActivationError, match="launch_activate_socket"):
        from_launchd(FakeLibSystem({}, error=errno.EALREADY))


def test_without_libsystem_there_is_nothing_to_take():
    assert from_launchd() is None  # Linux: no /usr/lib/libSystem.B.dylib


def test_lokid_serves_the_socket_launchd_hands_over(tmp_short):
    path = tmp_short / "lokid.sock"
    made = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    made.bind(str(path))
    made.listen()
    spare = os.dup(made.fileno())
    lib = FakeLibSystem({"lokid": [os.dup(made.fileno()), spare]})
    listener = from_launchd(lib)
    assert listener is not None and listener.path is None
    with pytest.raises(OSError):
        os.fstat(spare)  # launchd's extra fds for the entry are closed

    settings = Settings(socket=path, state_dir=tmp_short / "state", shutdown_grace=1)
    app = build_app(settings, containers=False)
    daemon = build_daemon(app)

    def ping() -> str:
        with Client.connect(path, timeout=10) as client:
            return client.call("ping")["time"]

    async def main() -> str:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(daemon.serve, listener, handle_signals=False))
            answer = await trio.to_thread.run_sync(ping)
            app.lifecycle.request_shutdown("test")
        return answer

    assert trio.run(main)
    assert path.exists(), "the socket file belongs to launchd"
    made.close()
