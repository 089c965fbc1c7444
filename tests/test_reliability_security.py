"""Security: other users, hostile project paths, payloads that look like shell, secrets.

Real daemon, real second user (created with `useradd` when missing, removed after), real
files. Every check also asserts that nothing was created outside the project.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dockerenv import DockerEnv

from lokictl import DaemonError
from support import Lokid, ping_as, wait_until

SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-sec-SECRET-5551234567",
    "GITHUB_TOKEN": "ghp_sec_SECRET_qwertyuiop",
    "GH_TOKEN": "gho_sec_SECRET_asdfghjkl",
}
PROBE_USER = "lokid-probe"


@pytest.fixture
def lokid(tmp_short: Path) -> Iterator[Lokid]:
    daemon = Lokid(tmp_short, env={"LOKID_LOG_LEVEL": "debug", **SECRETS}).start()
    yield daemon
    daemon.kill()


@pytest.fixture
def project(tmp_short: Path) -> Path:
    """In a folder of its own (lokid's socket, log and state live in tmp_short)."""
    path = tmp_short / "area" / "proj"
    (path / ".loki").mkdir(parents=True)
    return path


def tree(root: Path) -> set[str]:
    """Every path under `root` (to prove nothing appeared where it should not)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- another uid ----------------------------------------------------------------------------


@pytest.fixture
def other_uid() -> Iterator[int]:
    """A second, real user: made with useradd for the test when it does not exist."""
    if os.geteuid() != 0:
        pytest.skip("creating a user and switching to it needs root")
    created = False
    try:
        uid = pwd.getpwnam(PROBE_USER).pw_uid
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PROBE_USER],
            check=True,
        )
        created = True
        uid = pwd.getpwnam(PROBE_USER).pw_uid
    try:
        yield uid
    finally:
        if created:
            subprocess.run(["userdel", PROBE_USER], check=False)


def test_another_user_cannot_use_the_socket(lokid, other_uid):
    # As installed: the 0700 folder and 0600 socket already stop a second user.
    assert ping_as(other_uid, lokid.socket) == "permission denied"
    # Opened up by mistake: the peer-uid check still closes without a reply.
    for folder in (lokid.root, lokid.socket.parent):
        os.chmod(folder, 0o755)
    os.chmod(lokid.socket, 0o666)
    assert ping_as(other_uid, lokid.socket) == "closed"
    wait_until(lambda: f"uid {other_uid}" in lokid.log(), 10, "the refusal in the log")
    assert lokid.call("ping")


# -- hostile project paths ------------------------------------------------------------------


def code(lokid: Lokid, method: str, params: dict[str, Any]) -> str:
    try:
        lokid.call(method, params)
    except DaemonError as err:
        return err.code
    return "ok"


@pytest.mark.parametrize("method", ["queue.enqueue", "queue.stats", "signal.pause", "run.status"])
def test_dot_dot_and_unnormal_paths_are_refused_and_create_nothing(lokid, project, method):
    outside = project.parent / "outside"
    outside.mkdir()
    before = tree(project.parent)
    params: dict[str, Any] = {"task": {"type": "eng"}} if method == "queue.enqueue" else {}
    for path in (
        f"{project}/../outside",
        f"{project}/./x",
        f"{project}//x",
        f"{project}/",
        "proj",
        f"{project}/../../../../tmp",
    ):
        assert code(lokid, method, {"project": path, **params}) == "invalid_params", path
    missing = code(lokid, method, {"project": str(project) + "/missing", **params})
    assert missing in (("not_found", "unavailable") if method == "run.status" else ("not_found",))
    assert tree(project.parent) == before
    assert lokid.proc.poll() is None


def test_non_utf8_and_nul_in_paths_are_refused(lokid, project):
    before = tree(project.parent)
    for path in (str(project).encode() + b"/\xff\xfe", str(project) + "/\x00evil", 12, None):
        assert code(lokid, "queue.stats", {"project": path}) in ("invalid_params", "not_found")
    # A real folder whose name is not UTF-8 exists beside the project: lokid's scans survive.
    os.mkdir(os.fsencode(str(project.parent)) + b"/bad-\xff-name")
    assert lokid.call("queue.enqueue", {"project": str(project), "task": {"type": "eng"}})
    assert lokid.call("project.list")
    assert tree(project.parent) - before == {os.fsdecode(b"bad-\xff-name")} | {
        p for p in tree(project.parent) - before if p.startswith("proj/.loki")
    }


def test_symlinks_never_let_writes_escape_the_project(lokid, project, tmp_short):
    """A symlinked project folder is used as the user names it; a view file that is a
    symlink to a file elsewhere is replaced (tmp + rename), never written through."""
    outside = tmp_short / "outside"
    outside.mkdir()
    victim = outside / "victim.json"
    victim.write_text("precious")
    queue = project / ".loki" / "queue"
    queue.mkdir()
    (queue / "in-progress.json").symlink_to(victim)
    link = tmp_short / "link"
    link.symlink_to(project)
    p = {"project": str(link)}
    lokid.call("queue.enqueue", p | {"task": {"id": "a", "type": "eng"}})
    lokid.call("queue.claim", p | {"agent": "x", "capabilities": ["eng"]})
    wait_until(lambda: not (queue / "in-progress.json").is_symlink(), 20, "the view rewrite")
    assert victim.read_text() == "precious"
    assert [t["id"] for t in json.loads((queue / "in-progress.json").read_text())] == ["a"]
    assert sorted(p.name for p in outside.iterdir()) == ["victim.json"]
    # A loop is refused clearly.
    loop = tmp_short / "loop"
    loop.symlink_to(loop)
    assert code(lokid, "queue.stats", {"project": str(loop)}) in ("not_found", "invalid_params")
    assert lokid.proc.poll() is None


# -- payloads never reach a shell ---------------------------------------------------------


@pytest.fixture
def canary() -> Iterator[Path]:
    """A file that only a shell running one of our payloads would create."""
    path = Path(f"/tmp/lokid-pwned-{uuid.uuid4().hex[:8]}")
    yield path
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def hostile(canary: Path) -> list[str]:
    return [
        f"$(touch {canary})",
        f"`touch {canary}`",
        f"; touch {canary};",
        f"| touch {canary}",
        f'\' "; touch {canary}; echo "',
        f"$(touch {canary}-n)\n`touch {canary}-n`",
    ]


def test_payloads_never_reach_a_shell(lokid, project, canary):
    p = {"project": str(project)}
    bad = hostile(canary)
    for i, text in enumerate(bad):
        task = {"id": f"t{i}-{text}", "type": "eng", "maxRetries": 1, "title": text}
        task["payload"] = {"action": text, "target": text, "params": {text: text}}
        lokid.call("queue.enqueue", p | {"task": task})
        held = lokid.call("queue.claim", p | {"agent": text, "capabilities": ["eng"]})["task"]
        if i % 2:
            lokid.call("queue.fail", p | {"id": held["id"], "agent": text, "error": text})
            lokid.call("dlq.retry", p | {"id": held["id"], "note": text})
            lokid.call("queue.cancel", p | {"id": held["id"], "reason": text})
        else:
            report = {"decisionReport": text, "status": text, "output": text}
            lokid.call("queue.complete", p | {"id": held["id"], "agent": text, "result": report})
    lokid.call("breaker.trip", p | {"type": "eng", "reason": bad[0]})
    import_hostile_pending_json(lokid, project, bad)
    lokictl_shows_them(lokid, project)
    wait_until(lambda: (project / ".loki/queue/completed.json").exists(), 20, "views")
    assert not list(Path("/tmp").glob(canary.name + "*")), "a payload reached a shell"


def import_hostile_pending_json(lokid: Lokid, project: Path, bad: list[str]) -> None:
    """Loki Mode's own file route: tasks written into pending.json, then imported."""
    pending = project / ".loki" / "queue" / "pending.json"
    pending.parent.mkdir(parents=True, exist_ok=True)
    entries = [{"id": f"imp-{i}", "type": text, "title": text} for i, text in enumerate(bad)]
    pending.write_text(json.dumps(entries))
    lokid.call("queue.import", {"project": str(project)})
    stats = lokid.call("queue.stats", {"project": str(project)})
    assert sum(stats["states"].values()) >= 2 * len(bad)


def lokictl_shows_them(lokid: Lokid, project: Path) -> None:
    """The CLI prints the hostile strings; printing is not running."""
    env = {**os.environ, "PWD": str(project), "LOKICTL_NO_SPAWN": "1"}
    for args in (("queue", "list"), ("queue", "stats"), ("dlq", "list"), ("breakers",)):
        for fmt in ((), ("--json",)):
            out = subprocess.run(
                [sys.executable, "-m", "lokictl", "--socket", str(lokid.socket), *fmt, *args],
                cwd=project,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, (args, out.stderr)


# -- secrets --------------------------------------------------------------------------------


def leaked(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_secrets_stay_out_of_logs_events_and_errors(lokid, project, tmp_short):
    """With the secrets in lokid's environment and debug logging, provoke every kind of
    output: events of all topics, errors of each code, status replies."""
    events = lokid.client()
    events.call("subscribe", {"topics": ["*"]})
    p = {"project": str(project)}
    replies = [
        lokid.call("daemon.status"),
        lokid.call("hello"),
        lokid.call("queue.enqueue", p | {"task": {"id": "s", "type": "eng"}}),
        lokid.call("project.list"),
        lokid.call("breaker.trip", p | {"type": "eng"}),
    ]
    errors = []
    for method, params in (
        ("queue.get", p | {"id": "nope"}),
        ("queue.enqueue", p | {"task": {"priority": 99}}),
        ("run.start", p | {"image": "no/such:image"}),
        ("image.update", {}),
        ("no.such", {}),
    ):
        try:
            replies.append(lokid.call(method, params))
        except DaemonError as err:
            errors.append(f"{err.code} {err.message} {err.data}")
    seen = []
    with contextlib.suppress(TimeoutError):
        while True:
            seen.append(events.next_event(timeout=1))
    events.close()
    blob = json.dumps(replies) + json.dumps(seen) + "\n".join(errors) + lokid.log()
    assert seen, "no events were produced to check"
    assert not leaked(blob)


@pytest.mark.docker
def test_secrets_printed_by_the_container_are_redacted(engine: DockerEnv, tmp_short: Path):
    """Container output (run.logs) that echoes a secret reaches the client redacted, and no
    secret is in labels, events or the log."""
    engine.publish()
    home = tmp_short / "home"
    home.mkdir()
    env = {"DOCKER_HOST": engine.host, "HOME": str(home), "LOKI_DOCKER_IMAGE": engine.image}
    lokid = Lokid(tmp_short, env={**env, "LOKID_LOG_LEVEL": "debug", **SECRETS}).start()
    path = tmp_short / "app"
    (path / ".loki").mkdir(parents=True)
    try:
        events = lokid.client()
        events.call("subscribe", {"topics": ["*"]})
        secret = SECRETS["ANTHROPIC_API_KEY"]
        started = lokid.call("run.start", {"project": str(path), "args": ["start", secret]})
        attrs = engine.client.api.inspect_container(started["container"])
        assert not leaked(json.dumps(attrs["Config"]["Labels"]))
        logs = wait_until(lambda: logs_with_args(lokid, path), 30, "the container's output")
        assert secret not in logs and "[redacted]" in logs, logs
        (path / ".loki" / "STOP").touch()
        lokid.call("run.stop", {"project": str(path)})
        seen = []
        with contextlib.suppress(TimeoutError):
            while True:
                seen.append(events.next_event(timeout=1))
        assert not leaked(json.dumps(seen) + json.dumps(started) + lokid.log())
    finally:
        lokid.kill()


def logs_with_args(lokid: Lokid, path: Path) -> str:
    text = json.dumps(lokid.call("run.logs", {"project": str(path)}))
    return text if "loki args" in text else ""
