"""The VS Code extension in a real VS Code: its .vsix installed into code-server (from npm,
built once into the test cache, see editorhosts.code_server) and driven through Debian's
Chromium with playwright-core, against a real lokid. The scenarios are
clients/vscode/test-host/host.test.ts, one pytest test each; screenshots are kept in
.artifacts/vscode/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from editorhosts import CHROMIUM, VSCODE, artifacts, code_server, need, npm, npm_ci, run


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """What the Node scenarios need: code-server, Chromium, the compiled tests and a .vsix
    packaged from this checkout."""
    need("chromium", CHROMIUM.exists(), f"{CHROMIUM} is missing (scripts/install-system-deps.sh)")
    server = code_server()
    npm_ci()
    npm("run", "build")
    vsix = tmp_path_factory.mktemp("vsix") / "lokid-loki.vsix"
    vsce = VSCODE / "node_modules" / ".bin" / "vsce"
    run([str(vsce), "package", "--out", str(vsix)], 300, cwd=VSCODE)
    shots = artifacts("vscode")
    yield {
        "LOKI_CODE_SERVER": str(server),
        "LOKI_CHROMIUM": str(CHROMIUM),
        "LOKI_VSIX": str(vsix),
        "LOKI_ARTIFACTS": str(shots),
    }


SCENARIOS = [
    "a plain folder",
    "a .loki folder",
    "a multi-root workspace",
    "lokictl found where users install it",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_in_code_server(host: dict[str, str], scenario: str) -> None:
    node = shutil.which("node")
    need("node", node is not None, "node is not installed (scripts/install-system-deps.sh)")
    assert node is not None
    out = run_node(node, scenario, host)
    assert "# fail 0" in out and "# pass 1" in out, out[-20000:]


def run_node(node: str, scenario: str, env: dict[str, str]) -> str:
    """One scenario of host.test.ts (node's test runner, by name)."""
    full = {**os.environ, **env, "LOKID_PYTHON": sys.executable}
    full.pop("LOKID_SOCKET", None)
    proc = subprocess.run(
        [
            node,
            "--test",
            f"--test-name-pattern=^{scenario}",
            "out/test-host/host.test.js",
        ],
        cwd=VSCODE,
        env=full,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"the scenario failed:\n{out[-20000:]}"
    return out
