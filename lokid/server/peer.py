"""Who is on the other end of a unix socket: SO_PEERCRED, or getpeereid on macOS."""

import ctypes
import ctypes.util
import socket
import struct
import sys

_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int | None, int]:
    """(pid or None, uid) of the process that connected `sock`."""
    if sys.platform == "darwin":
        return None, _getpeereid(sock.fileno())
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _gid = _UCRED.unpack(raw)
    return pid, uid


def _getpeereid(fd: int) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    uid = ctypes.c_uint32()
    gid = ctypes.c_uint32()
    if libc.getpeereid(fd, ctypes.byref(uid), ctypes.byref(gid)) != 0:
        raise OSError(ctypes.get_errno(), "getpeereid failed")
    return uid.value
