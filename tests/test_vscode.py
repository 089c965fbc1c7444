"""The VS Code extension (clients/vscode): its Node tests against a real lokid, and the
.vsix build.

`npm ci` runs when node_modules does not match package-lock.json (a stamp holds the lock
file's hash), so a warm second run costs only the tests. The Node tests start their own
lokid with this Python (LOKID_PYTHON) on a private socket. They load the extension against
a stand-in `vscode` module, a fast check; the extension in a real VS Code is
tests/test_vscode_host.py.
"""

from __future__ import annotations

import zipfile

import pytest
from editorhosts import VSCODE, npm, npm_ci


@pytest.fixture(scope="module")
def installed() -> None:
    npm_ci()


def test_node_tests_against_a_real_lokid(installed: None) -> None:
    out = npm("test")
    assert "# fail 0" in out
    passed = next(line for line in out.splitlines() if line.startswith("# pass "))
    assert int(passed.split()[2]) >= 30, passed


def test_package_builds_a_vsix(installed: None) -> None:
    vsix = VSCODE / "lokid-loki.vsix"
    vsix.unlink(missing_ok=True)
    npm("run", "package")
    assert vsix.stat().st_size > 10_000
    names = zipfile.ZipFile(vsix).namelist()
    assert "extension/out/src/extension.js" in names
    assert "extension/node_modules/@msgpack/msgpack/package.json" in names
    assert not any(n.startswith(("extension/out/test/", "extension/out/test-host/")) for n in names)
    assert not any("playwright" in n for n in names), "dev dependencies stay out"
