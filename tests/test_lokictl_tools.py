"""lokictl info, shell completion and the man page, from the real `lokictl` and lokid."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clisupport import run, user_env

from support import Lokid


@pytest.fixture
def proj(home) -> Path:
    path = home / "proj"
    (path / ".loki").mkdir(parents=True)
    return path


def test_info_says_where_things_are_and_what_is_wrong(lokid, proj, home):
    gone = home / "gone"
    gone.mkdir()
    lokid.call("project.add", {"path": str(gone)})
    lokid.call("project.add", {"path": str(proj)})
    done = run(lokid, proj, home, "info")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"socket      {lokid.socket} (from LOKID_SOCKET)" in text
    assert f"pid {lokid.proc.pid}" in text
    assert str(proj) in text and f"{gone}  no .loki/" in text
    info = json.loads(run(lokid, proj, home, "--json", "info").stdout)
    assert info["running"] is True and info["daemon"]["pid"] == lokid.proc.pid


def test_info_when_lokid_is_not_running_exits_3_and_starts_nothing(tmp_short, home):
    away = Lokid(tmp_short / "away")
    done = run(away, home, home, "info", LOKICTL_NO_SPAWN="0")
    assert done.returncode == 3, done
    assert "not running" in done.stdout and "spawn log" in done.stdout
    assert not away.socket.exists()


# needs daemon: daemon.info (log file, state folder, Docker endpoint and lokid's environment)
def test_info_shows_lokids_log_state_docker_and_an_environment_that_differs(tmp_short, home):
    daemon = Lokid(
        tmp_short,
        env={"DOCKER_HOST": f"unix://{tmp_short}/d.sock", "LOKI_DOCKER_IMAGE": "me/loki:1"},
    ).start()
    try:
        done = run(daemon, home, home, "info", DOCKER_HOST="unix:///elsewhere.sock")
        info = json.loads(run(daemon, home, home, "--json", "info").stdout)["daemon"]
    finally:
        daemon.kill()
    assert done.returncode == 0, done.stderr
    assert info["stateDir"] == str(tmp_short / "state" / "lokid")
    assert info["docker"] == {"endpoint": f"unix://{tmp_short}/d.sock", "source": "DOCKER_HOST"}
    assert info["environment"]["LOKI_DOCKER_IMAGE"] == "me/loki:1"
    assert f"docker      unix://{tmp_short}/d.sock (from DOCKER_HOST)" in done.stdout
    assert "differs     DOCKER_HOST" in done.stdout and "LOKI_DOCKER_IMAGE" in done.stdout


def test_bash_completion_completes_commands_and_task_ids_from_lokid(lokid, proj, home):
    task = json.loads(run(lokid, proj, home, "--json", "queue", "add", "eng").stdout)["id"]
    script = run(lokid, proj, home, "completion", "bash").stdout
    completions = home / "lokictl.bash"
    completions.write_text(script)
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "lokictl").write_text(f'#!/bin/sh\nexec {sys.executable} -m lokictl "$@"\n')
    (bin_dir / "lokictl").chmod(0o755)
    probe = f"""
source {completions}
complete_words() {{
  COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}
  COMPREPLY=(); _shtab_lokictl lokictl "${{COMP_WORDS[-1]}}" "${{COMP_WORDS[-2]}}"
  printf '%s\\n' "${{COMPREPLY[@]}}"
}}
complete_words lokictl que
echo --
complete_words lokictl queue get ''
"""
    env = user_env(lokid, proj, home, PATH=f"{bin_dir}:{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-c", probe], env=env, cwd=proj, capture_output=True, text=True, timeout=60
    )
    commands, _, ids = done.stdout.partition("--\n")
    assert commands.split() == ["queue"], done
    assert ids.split() == [task], done


def test_zsh_and_fish_completion_are_generated_with_task_ids(lokid, proj, home):
    for shell, hook in (("zsh", "lokictl __complete tasks"), ("fish", "lokictl __complete tasks")):
        script = run(lokid, proj, home, "completion", shell).stdout
        assert hook in script and "queue" in script and "--project" in script
        if shutil.which(shell):
            check = ["zsh", "-n"] if shell == "zsh" else ["fish", "--no-execute"]
            path = home / f"lokictl.{shell}"
            path.write_text(script)
            assert subprocess.run([*check, str(path)], timeout=30).returncode == 0
    bad = run(lokid, proj, home, "completion", "tcsh")
    assert bad.returncode == 2 and "bash, zsh, fish" in bad.stderr


def test_the_man_page_comes_from_the_same_parser(lokid, proj, home):
    page = run(lokid, proj, home, "man").stdout
    assert page.startswith(".TH LOKICTL")
    for words in ("queue claim", "run start", "breakers reload", "exit codes", "LOKICTL_NO_SPAWN"):
        assert words in page.replace("\\fB", "").replace("\\fR", "").replace("\\-", "-"), words
    if shutil.which("man"):
        shown = subprocess.run(
            ["man", "-l", "-"],
            input=page,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "MANPAGER": "cat", "PAGER": "cat"},
        )
        assert shown.returncode == 0 and "queue claim" in shown.stdout
