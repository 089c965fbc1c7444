"""lokictl top in a real terminal: tmux runs it against a real lokid, `send-keys` types and
`capture-pane` reads the screen."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from clisupport import LOKICTL, user_env

from lokictl import DaemonError
from support import Lokid, wait_until

pytestmark = pytest.mark.skipif(not shutil.which("tmux"), reason="needs tmux")


class Terminal:
    """One tmux server of its own (-L), one 120x40 window running a command."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.server = f"lokictl-test-{uuid.uuid4().hex[:8]}"
        # The window is this size from the start (not 80x24 resized after the program
        # already read its size).
        self.config = cwd.parent / f"{self.server}.conf"
        self.config.write_text("set -g default-size 120x40\n")
        pass_env = [f"-e{k}={v}" for k, v in env.items() if k.startswith(("LOKI", "PWD", "HOME"))]
        self.tmux("-f", str(self.config), "new-session", "-d", "-s", "t", "-x", "120", "-y", "40",
                  *pass_env, "-c", str(cwd), "--", *argv)  # fmt: skip

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.server, *args], capture_output=True, text=True, timeout=30
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "t").stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def shows(self, *texts: str, timeout: float = 15) -> str:
        def all_there() -> str | None:
            screen = self.screen()
            return screen if all(t in screen for t in texts) else None

        try:
            return wait_until(all_there, timeout, f"{texts} on screen")
        except AssertionError:
            raise AssertionError(f"{texts} not on screen:\n{self.screen()}") from None

    def running(self) -> bool:
        return self.tmux("has-session", "-t", "t").returncode == 0

    def close(self) -> None:
        self.tmux("kill-server")


def call(lokid: Lokid, method: str, proj: Path, **params: object) -> dict:
    return lokid.call(method, {"project": str(proj), **params})


def dead_letter(lokid: Lokid, proj: Path, name: str, kind: str) -> str:
    task = {"id": name, "type": kind, "maxRetries": 1, "payload": {"n": name}}
    call(lokid, "queue.enqueue", proj, task=task)
    call(lokid, "queue.claim", proj, agent="w", capabilities=[kind])
    call(lokid, "queue.fail", proj, id=name, agent="w", error=f"{name} broke")
    return name


def test_top_shows_the_project_live_and_its_keys_act(lokid, tmp_short):
    home = tmp_short / "home"
    proj = home / "proj"
    (proj / ".loki" / "config").mkdir(parents=True)
    config = "defaults: {failureThreshold: 1, halfOpenAfter: 600}\n"
    (proj / ".loki" / "config" / "circuit-breakers.yaml").write_text(config)
    call(lokid, "queue.enqueue", proj, task={"id": "t-work", "type": "eng", "payload": {"a": 1}})
    call(lokid, "queue.claim", proj, agent="agent-7", capabilities=["eng"])
    first = dead_letter(lokid, proj, "t-dead1", "eng-db")
    second = dead_letter(lokid, proj, "t-dead2", "eng-ops")
    call(lokid, "breaker.trip", proj, type="eng-qa")

    term = Terminal([*LOKICTL, "top"], user_env(lokid, proj, home), proj)
    try:
        term.shows("lokictl top", str(proj), "IN PROGRESS", "t-work", "agent-7", "DEAD LETTERS")
        term.shows("t-dead1 broke", "eng-qa open", "eng-db open half-open in 9m")
        call(lokid, "queue.enqueue", proj, task={"type": "later", "payload": {"b": 2}})
        term.shows("queue.enqueued", "type=later")  # live, from lokid's events

        term.keys("p")
        wait_until(lambda: (proj / ".loki" / "PAUSE").exists(), what="PAUSE written")
        term.shows("state: paused")
        term.keys("p")
        wait_until(lambda: not (proj / ".loki" / "PAUSE").exists(), what="PAUSE removed")

        term.keys("j", "r")  # the first dead letter: retry
        wait_until(lambda: call(lokid, "queue.get", proj, id=first)["state"] == "pending")
        term.shows(f"{first}: back to pending")
        term.keys("j", "d")  # the next one: delete, after saying yes
        term.shows(f"delete {second}? (y/n)")
        term.keys("y")
        wait_until(lambda: _gone(lokid, proj, second), what="the dead letter deleted")

        term.keys("k", "k", "k", "Enter")  # follow the task in progress
        term.shows("following t-work", "claimed by    agent-7")
        term.keys("q")
        term.shows("IN PROGRESS")
        term.keys("a")
        term.shows("all projects", "PENDING  RUNNING")
        term.keys("q")
        wait_until(lambda: not term.running(), what="top to quit on q")
    finally:
        term.close()


def _gone(lokid: Lokid, proj: Path, task: str) -> bool:
    try:
        call(lokid, "queue.get", proj, id=task)
    except DaemonError as exc:
        return exc.code == "not_found"
    return False
