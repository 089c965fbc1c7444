"""The Neovim plugin as a user has it: Neovim in a real terminal (tmux), the plugin loaded
from the user's init.vim as the README says, a statusline in every window, keys typed with
send-keys and the screen read with capture-pane, against a real lokid.

Every wait is for text on the screen; the screens seen are kept under .artifacts/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from editorhosts import Tmux, artifacts, need

from support import Lokid, lokictl, no_engine, wait_until

ROOT = Path(__file__).resolve().parent.parent
NVIM = shutil.which("nvim")

INIT_VIM = """\
set runtimepath+={plugin}
set laststatus=2
set statusline=%f\\ %{{v:lua.require'loki'.statusline()}}
set shortmess+=I
set noswapfile
"""


@pytest.fixture
def home(tmp_short: Path) -> Path:
    """A private HOME whose init.vim loads the plugin as the README says, and a PATH whose
    `lokictl` notes each run in home/lokictl-runs before running the real one."""
    home = tmp_short / "home"
    (home / ".config" / "nvim").mkdir(parents=True)
    (home / ".config" / "nvim" / "init.vim").write_text(
        INIT_VIM.format(plugin=ROOT / "clients" / "nvim")
    )
    bin_dir = home / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "lokictl"
    wrapper.write_text(
        f'#!/bin/sh\necho "$*" >> "{home}/lokictl-runs"\nexec "{sys.executable}" -m lokictl "$@"\n'
    )
    wrapper.chmod(0o755)
    return home


def nvim_env(home: Path, socket_path: Path, cwd: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("NVIM", "VIM", "MYVIMRC", "XDG_"))
    }
    return {
        **env,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "PATH": f"{home / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "LOKID_SOCKET": str(socket_path),
        "PWD": str(cwd),
        "TERM": "xterm-256color",
    }


@pytest.fixture
def term(tmp_short: Path, request: pytest.FixtureRequest) -> Iterator[Tmux]:
    """Neovim's terminal; its screens are kept in .artifacts/<test>/ (the last one as
    last.txt, whether the test passed or not). At the end, whatever answers on the test's
    socket is stopped, even a lokid the plugin should not have started."""
    need("tmux", shutil.which("tmux") is not None, "tmux is not installed")
    need("nvim", NVIM is not None, "nvim is not installed")
    tmux = Tmux(tmp_short, shots=artifacts(request.node.name))
    yield tmux
    tmux.save("last")
    tmux.kill()
    stop = [
        sys.executable,
        "-m",
        "lokictl",
        "--no-spawn",
        "--socket",
        str(tmp_short / "run" / "lokid.sock"),
    ]
    subprocess.run([*stop, "daemon", "stop"], capture_output=True, timeout=30)


def start_nvim(term: Tmux, home: Path, socket_path: Path, cwd: Path) -> None:
    assert NVIM is not None
    term.start([NVIM], cwd, nvim_env(home, socket_path, cwd))


def loki_project(root: Path, name: str = "proj") -> Path:
    path = root / name
    (path / ".loki").mkdir(parents=True)
    return path


def statuslines(screen: str) -> list[str]:
    """The loki part of each window's statusline on the screen."""
    return [line.split(" loki:", 1)[1].strip() for line in screen.splitlines() if " loki:" in line]


class HangUp:
    """Something that accepts on lokid's socket path and hangs up at once, counting the
    connections: each background reconnect attempt is one."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.accepts = 0
        self.path = path
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepts += 1
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(10)
        self.path.unlink(missing_ok=True)


def test_statusline_commands_and_live_buffers(tmp_short: Path, home: Path, term: Tmux) -> None:
    daemon = Lokid(tmp_short, env=no_engine(tmp_short)).start()
    project = loki_project(tmp_short)
    try:
        start_nvim(term, home, daemon.socket, project)
        # The statusline follows a .loki project with no command typed yet.
        term.wait_for("a live statusline", lambda s: statuslines(s) == ["idle p0 r0"])
        term.command("Loki status")
        term.wait_text("Queue:    pending 0, in-progress 0")
        term.command("Loki tasks")
        term.wait_text("## pending (0)")
        # Someone else adds a task: the tasks buffer and every window's statusline follow.
        added = lokictl(daemon, project, "queue", "add", "--id", "t-live", "eng")
        assert added.returncode == 0, added.stderr
        daemon.call(
            "queue.enqueue",
            {
                "project": str(project),
                "task": {"id": "t-2", "type": "eng", "payload": {"goal": "ship it"}},
            },
        )
        screen = term.wait_for(
            "three windows' statuslines at p2",
            lambda s: statuslines(s) == ["idle p2 r0"] * 3 and "t-2  eng  p5  ship it" in s,
        )
        daemon.call(
            "queue.claim", {"project": str(project), "agent": "a1", "capabilities": ["eng"]}
        )
        term.wait_for("claimed", lambda s: "@a1" in s and statuslines(s) == ["idle p1 r1"] * 3)
        term.save("1-tasks-and-statuslines")

        # <CR> on the claimed task shows it whole, as a readable task.
        term.command("call search('@a1')")
        term.keys("Enter")
        screen = term.wait_text("claimedBy: a1")
        assert "# task t-2 (in-progress)" in screen or "# task t-live (in-progress)" in screen
        assert "vim.NIL" not in screen and "lastError" not in screen, screen
        term.save("2-task")

        # Pause and resume through the files Loki Mode reads.
        term.command("Loki pause")
        term.wait_text(f"{project.name} paused (.loki/PAUSE written)")
        term.wait_for("paused", lambda s: statuslines(s) == ["paused p1 r1"] * 4)
        assert (project / ".loki" / "PAUSE").exists()
        term.command("Loki resume")
        term.wait_for("resumed", lambda s: statuslines(s) == ["idle p1 r1"] * 4)
        assert not (project / ".loki" / "PAUSE").exists()

        # A dead letter: told so, shown in :Loki dlq, retried with r.
        p = str(project)
        daemon.call(
            "queue.enqueue",
            {
                "project": p,
                "task": {"id": "t-dead", "type": "qa", "maxRetries": 1, "payload": {"n": 1}},
            },
        )
        claimed = daemon.call("queue.claim", {"project": p, "agent": "a2", "capabilities": ["qa"]})
        assert claimed["task"] and claimed["task"]["id"] == "t-dead", claimed
        daemon.call("queue.fail", {"project": p, "id": "t-dead", "agent": "a2", "error": "boom"})
        term.wait_text("task t-dead (qa) dead-lettered: boom")
        term.command("only")
        term.command("Loki dlq")
        term.wait_text("t-dead  qa  retries 1  boom")
        term.command("call search('t-dead')")
        term.keys("r")
        term.wait_for("retried", lambda s: "(none)" in s and "t-dead is pending again" in s)
        term.save("3-dlq")

        # The events log follows what arrives, like tail -f.
        term.command("only")
        term.command("Loki events")
        term.command("only")
        for i in range(60):
            daemon.call(
                "queue.enqueue",
                {"project": p, "task": {"id": f"e-{i}", "type": "ops", "payload": {"n": i}}},
            )
        term.wait_text('"id":"e-59"')
        term.save("4-events")
    except AssertionError:
        print(daemon.log()[-5000:])
        raise
    finally:
        daemon.kill()


def test_daemon_stop_stays_stopped_and_a_restart_is_followed(
    tmp_short: Path, home: Path, term: Tmux
) -> None:
    daemon = Lokid(tmp_short).start()
    project = loki_project(tmp_short)
    hangup = None
    try:
        start_nvim(term, home, daemon.socket, project)
        term.command("Loki status")
        term.wait_for("two live statuslines", lambda s: statuslines(s) == ["idle p0 r0"] * 2)

        stopped = lokictl(daemon, project, "daemon", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert daemon.proc is not None
        assert daemon.proc.wait(20) == 0
        term.wait_for("offline", lambda s: statuslines(s) == ["offline"] * 2)
        # Background reconnects go on (each one an accept here), and none starts lokid.
        hangup = HangUp(daemon.socket)
        wait_until(lambda: hangup.accepts >= 2, 20, "two reconnect attempts")
        runs = home / "lokictl-runs"
        assert not runs.exists(), f"lokid was started: lokictl {runs.read_text()}"
        assert statuslines(term.screen()) == ["offline"] * 2
        term.save("1-stopped")
        hangup.close()
        hangup = None

        daemon = Lokid(tmp_short).start()
        term.wait_for("followed again", lambda s: statuslines(s) == ["idle p0 r0"] * 2)
        lokictl(daemon, project, "queue", "add", "--id", "after", "eng")
        term.wait_for(
            "live again", lambda s: statuslines(s) == ["idle p1 r0"] * 2 and "pending 1" in s
        )
        term.save("2-back")
    finally:
        if hangup is not None:
            hangup.close()
        daemon.kill()


def test_a_plain_folder_is_left_alone(tmp_short: Path, home: Path, term: Tmux) -> None:
    daemon = Lokid(tmp_short).start()
    plain = tmp_short / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("no Loki here\n")
    try:
        start_nvim(term, home, daemon.socket, plain)
        term.command("edit notes.txt")
        term.wait_text("no Loki here")
        term.command("lua print('followed: ' .. tostring(require('loki').model() ~= nil))")
        screen = term.wait_text("followed: false")
        assert " loki:" not in screen
        assert not (plain / ".loki").exists()
        assert str(plain) not in daemon.call("daemon.status")["projects"]
    finally:
        daemon.kill()
