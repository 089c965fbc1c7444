"""The VS Code extension (clients/vscode): its Node tests against a real lokid, and the
.vsix build.

`npm ci` runs when node_modules does not match package-lock.json (a stamp holds the lock
file's hash), so a warm second run costs only the tests. The Node tests start their own
lokid with this Python (LOKID_PYTHON) on a private socket.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VSCODE = ROOT / "clients" / "vscode"
NPM = shutil.which("npm")
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NPM is None or NODE is None,
    reason="node/npm not installed (scripts/install-system-deps.sh installs nodejs and npm)",
)


def npm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert NPM is not None
    env = {**os.environ, "LOKID_PYTHON": sys.executable, "npm_config_update_notifier": "false"}
    env.pop("LOKID_SOCKET", None)
    return subprocess.run(
        [NPM, *args],
        cwd=VSCODE,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def installed() -> None:
    lock = hashlib.sha256((VSCODE / "package-lock.json").read_bytes()).hexdigest()
    stamp = VSCODE / "node_modules" / ".lokid-lock-sha256"
    if stamp.exists() and stamp.read_text() == lock:
        return
    proc = npm("ci", "--no-audit", "--no-fund")
    assert proc.returncode == 0, f"npm ci failed:\n{proc.stdout}\n{proc.stderr}"
    stamp.write_text(lock)


def test_node_tests_against_a_real_lokid(installed: None) -> None:
    proc = npm("test")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"npm test failed:\n{out[-20000:]}"
    assert "# fail 0" in out
    passed = next(line for line in out.splitlines() if line.startswith("# pass "))
    assert int(passed.split()[2]) >= 30, passed


def test_package_builds_a_vsix(installed: None) -> None:
    vsix = VSCODE / "lokid-loki.vsix"
    vsix.unlink(missing_ok=True)
    proc = npm("run", "package")
    assert proc.returncode == 0, f"npm run package failed:\n{proc.stdout}\n{proc.stderr}"
    assert vsix.stat().st_size > 10_000
    names = zipfile.ZipFile(vsix).namelist()
    assert "extension/out/src/extension.js" in names
    assert "extension/node_modules/@msgpack/msgpack/package.json" in names
    assert not any(n.startswith("extension/out/test/") for n in names)
