"""`make install` from a fresh clone puts working `lokid` and `lokictl` on PATH (under a
private PREFIX here), with the man page and completions; `make uninstall` takes them away."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support import short_tmpdir

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not shutil.which("git") or not shutil.which("make"), reason="needs git, make")
def test_make_install_from_a_fresh_clone_then_uninstall(tmp_path):
    clone, prefix, home = tmp_path / "clone", tmp_path / "prefix", tmp_path / "home"
    home.mkdir()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    cache = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
    env = {**os.environ, "HOME": str(home), "PIP_CACHE_DIR": cache}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "LOKID_SOCKET"):
        env.pop(name, None)
    installed = subprocess.run(
        ["make", "install", f"PREFIX={prefix}"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"{prefix}/bin is not on your PATH" in installed.stdout
    shutil.rmtree(clone)  # what was installed no longer needs the clone

    bin_dir = prefix / "bin"
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    run_dir = short_tmpdir()
    env |= {"LOKID_SOCKET": str(run_dir / "run" / "lokid.sock"), "XDG_STATE_HOME": str(home)}
    try:
        version = subprocess.run(["lokictl", "--version"], env=env, capture_output=True, text=True)
        assert version.stdout.startswith("lokictl "), version
        # lokictl starts the installed lokid, as it would for a user, then stops it.
        ping = subprocess.run(["lokictl", "ping"], env=env, capture_output=True, text=True)
        assert ping.returncode == 0 and ping.stdout.startswith("pong"), ping
        stop = subprocess.run(["lokictl", "daemon", "stop"], env=env, capture_output=True)
        assert stop.returncode == 0
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    share = prefix / "share"
    assert (share / "man/man1/lokictl.1").read_text().startswith(".TH LOKICTL")
    assert "_shtab_lokictl" in (share / "bash-completion/completions/lokictl").read_text()
    assert (share / "zsh/site-functions/_lokictl").exists()
    assert (share / "fish/vendor_completions.d/lokictl.fish").exists()

    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    gone = subprocess.run(
        ["make", "uninstall", f"PREFIX={prefix}"], cwd=clone, env=env, capture_output=True
    )
    assert gone.returncode == 0
    assert not (bin_dir / "lokictl").exists() and not (bin_dir / "lokid").exists()
    assert not (share / "lokid").exists()
