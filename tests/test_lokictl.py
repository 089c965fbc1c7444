"""lokictl as people expect a CLI to behave: the real `lokictl` in a subprocess, from a
folder, against a real lokid; a pseudo-terminal where what a person sees matters."""

from __future__ import annotations

import itertools
import json
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from clisupport import LOKICTL, run, run_pty, user_env

from support import Lokid

ESC = "\x1b["


@pytest.fixture
def proj(home) -> Path:
    """A Loki Mode project (a folder with .loki/) with a subfolder, under $HOME."""
    path = home / "proj"
    (path / ".loki").mkdir(parents=True)
    (path / "src" / "deep").mkdir(parents=True)
    return path


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """A mistake: the exit code, one line on stderr, and never a traceback."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lokictl: "), done.stderr
    return lines[0]


# -- 1. streams --------------------------------------------------------------------------


def streamed(events: subprocess.Popen[str], lokid: Lokid, proj: Path, kind: str) -> str:
    """Enqueue tasks of `kind` until `lokictl events` prints one: the stream is live."""
    deadline = time.monotonic() + 20
    for n in itertools.count():
        task = {"type": kind, "payload": {"n": n, "kind": kind}}
        lokid.call("queue.enqueue", {"project": str(proj), "task": task})
        if select.select([events.stdout], [], [], 0.2)[0]:
            return events.stdout.readline()
        assert events.poll() is None, events.communicate()
        assert time.monotonic() < deadline, "lokictl events printed nothing"
    raise AssertionError


def test_events_outlive_a_quiet_spell_and_end_with_exit_4_when_lokid_goes(lokid, proj, home):
    """A stream is not a request: it is not bound by the request timeout (1 s here, 30 s by
    default), and when lokid stops it ends with exit 4 and a message."""
    env = user_env(lokid, proj, home, LOKICTL_TIMEOUT="1")
    events = subprocess.Popen(
        [*LOKICTL, "events", "queue.*", "--project", "."],
        env=env,
        cwd=proj,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "queue.enqueued" in streamed(events, lokid, proj, "before")
        quiet = time.monotonic() + 3  # three request timeouts of silence
        while time.monotonic() < quiet:
            assert events.poll() is None, events.communicate()
            time.sleep(0.1)
        line = streamed(events, lokid, proj, "after")
        assert "queue.enqueued" in line and "after" in line
        lokid.stop()
        _, err = events.communicate(timeout=20)
    finally:
        events.kill()
    assert events.returncode == 4, err
    assert "lokid went away" in err and "Traceback" not in err


def test_events_reconnect_follows_a_restart_of_lokid(lokid, proj, home):
    events = subprocess.Popen(
        [*LOKICTL, "events", "queue.*", "--reconnect"],
        env=user_env(lokid, proj, home),
        cwd=proj,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        streamed(events, lokid, proj, "before")
        lokid.stop()
        lokid.start()
        line = streamed(events, lokid, proj, "after")
        assert "queue.enqueued" in line and "after" in line
    finally:
        events.send_signal(signal.SIGINT)
        _, err = events.communicate(timeout=10)
    assert events.returncode == 0 and "reconnected" in err


# -- 2. which project --------------------------------------------------------------------


def test_outside_a_project_nothing_is_created_and_lokid_is_not_told(lokid, home):
    """`cd ~ && lokictl queue stats` must not make $HOME a project (nor any folder)."""
    elsewhere = home / "notes"
    elsewhere.mkdir()
    for cwd in (home, elsewhere):
        for args in (("queue", "stats"), ("pause",), ("queue", "add", "eng"), ("breakers",)):
            line = one_line_error(run(lokid, cwd, home, *args))
            assert "not inside a Loki Mode project (no .loki/ here or above)" in line
            assert "lokictl init" in line
    assert not (home / ".loki").exists() and not (elsewhere / ".loki").exists()
    assert lokid.call("daemon.status")["projects"] == []
    one_line_error(run(lokid, home, home, "init"))  # never $HOME: ~/.loki is Loki Mode's own
    # With Loki Mode's global ~/.loki there, $HOME is still not a project (from it or below).
    (home / ".loki" / "dashboard").mkdir(parents=True)
    for cwd in (home, elsewhere):
        line = one_line_error(run(lokid, cwd, home, "pause"))
        assert "not inside a Loki Mode project" in line
    assert list((home / ".loki").iterdir()) == [home / ".loki" / "dashboard"]
    assert lokid.call("daemon.status")["projects"] == []


def test_the_project_is_found_from_a_subfolder_as_git_finds_a_repository(lokid, proj, home):
    deep = proj / "src" / "deep"
    task = json.loads(ok(run(lokid, deep, home, "--json", "queue", "add", "eng")))["id"]
    assert not (deep / ".loki").exists() and not (proj / "src" / ".loki").exists()
    got = json.loads(ok(run(lokid, proj, home, "--json", "queue", "get", task)))
    assert got["task"]["id"] == task


def test_init_and_queue_add_init_are_what_make_a_project(lokid, home):
    fresh = home / "fresh"
    fresh.mkdir()
    assert "initialised" in ok(run(lokid, fresh, home, "init"))
    assert (fresh / ".loki").is_dir()
    assert str(fresh) in [p["path"] for p in lokid.call("project.list")["projects"]]
    assert "already" in ok(run(lokid, fresh, home, "init"))
    other = home / "other"
    other.mkdir()
    one_line_error(run(lokid, other, home, "queue", "add", "eng"))
    assert json.loads(ok(run(lokid, other, home, "--json", "queue", "add", "eng", "--init")))["id"]
    assert (other / ".loki").is_dir()


def test_paths_as_people_type_them(lokid, proj, home):
    """`--project proj/`, `--project .`, `project add src` are made absolute and normal."""
    ok(run(lokid, home, home, "queue", "add", "eng", "--project", "proj/"))
    stats = json.loads(ok(run(lokid, proj, home, "--json", "queue", "stats", "--project", ".")))
    assert stats["states"]["pending"] == 1
    added = json.loads(ok(run(lokid, proj, home, "--json", "project", "add", "src")))
    assert added["project"]["path"] == str(proj / "src")
    line = one_line_error(run(lokid, home, home, "queue", "stats", "--project", "nowhere"))
    assert f"no such folder: {home / 'nowhere'}" in line
    for command in (("run", "status"), ("run", "logs")):  # run and image take --project too
        line = one_line_error(run(lokid, home, home, *command, "--project", "nowhere"))
        assert "no such folder" in line


# -- 4. STOP has a way out ---------------------------------------------------------------


def test_resume_clears_stop_and_pause_and_claims_say_why_they_got_nothing(lokid, proj, home):
    ok(run(lokid, proj, home, "queue", "add", "eng"))
    ok(run(lokid, proj, home, "stop"))
    claim = ("queue", "claim", "--agent", "a1", "--cap", "eng")
    assert ok(run(lokid, proj, home, *claim)).strip() == (
        "no task (project stopped: .loki/STOP; run `lokictl resume`)"
    )
    ok(run(lokid, proj, home, "pause"))
    resumed = ok(run(lokid, proj, home, "resume")).strip()
    assert resumed == "resumed (removed .loki/PAUSE, .loki/lokid/PAUSE, .loki/STOP)"
    assert not (proj / ".loki" / "STOP").exists() and not (proj / ".loki" / "PAUSE").exists()
    ok(run(lokid, proj, home, "pause"))
    assert "project paused: .loki/PAUSE" in ok(run(lokid, proj, home, *claim))
    ok(run(lokid, proj, home, "resume"))
    assert "eng" in ok(run(lokid, proj, home, *claim))


def test_a_claim_kept_out_by_an_open_breaker_says_which_and_until_when(lokid, proj, home):
    ok(run(lokid, proj, home, "queue", "add", "eng-db"))
    ok(run(lokid, proj, home, "breakers", "trip", "eng-db"))
    text = ok(run(lokid, proj, home, "queue", "claim", "--agent", "a", "--cap", "eng-db")).strip()
    assert text.startswith("no task (breakers open: eng-db"), text


# -- 5. rejected configuration -----------------------------------------------------------


def test_a_rejected_breaker_config_exits_1_naming_file_line_key_and_reason(lokid, proj, home):
    config = proj / ".loki" / "config" / "circuit-breakers.yaml"
    config.parent.mkdir()
    config.write_text("defaults:\n  failureThreshold: 3\n  coolDown: 5\n")
    done = run(lokid, proj, home, "breakers", "reload")
    assert done.returncode == 1, done
    assert str(config) in done.stderr and "line 3" in done.stderr and "coolDown" in done.stderr
    as_json = run(lokid, proj, home, "--json", "breakers", "reload")
    assert as_json.returncode == 1 and "line 3" in json.loads(as_json.stdout)["error"]
    config.write_text("defaults:\n  failureThreshold: 3\n")
    assert ok(run(lokid, proj, home, "breakers", "reload")).strip() == "reloaded"


# -- 6, 7. mistakes are one line, bad values are refused ----------------------------------


def test_ordinary_mistakes_are_one_line_with_exit_2_and_no_traceback(lokid, proj, home):
    (proj / "broken.json").write_text('[{"type": "eng",')
    (proj / "object.json").write_text('{"type": "eng"}')
    cases = {
        ("queue", "add", "--file", "missing.json"): "cannot read --file missing.json",
        ("queue", "add", "--file", "broken.json"): "not valid JSON",
        ("queue", "add", "--file", "object.json"): "JSON array of task objects",
        ("queue", "add", "eng", "--payload", "{nope"): "not valid JSON",
        ("queue", "add", "eng", "--payload", "[1]"): "must be a JSON object",
        ("queue", "add", "--priority", "urgent"): "valid: 1-10 or critical, high",
        ("queue", "add", "--priority", "-1"): "valid: 1-10",
        ("queue", "add", "--priority", "11"): "valid: 1-10",
        ("queue", "claim", "--agent", "a", "--cap", "eng", "--lease", "soon"): "seconds",
        ("queue", "list", "--state", "done"): "choose from pending, in-progress, completed",
        ("queue", "list", "--state", "pendng"): "did you mean 'pending'?",
        ("queue", "list", "--limit", "0"): "whole number",
    }
    for args, expected in cases.items():
        assert expected in one_line_error(run(lokid, proj, home, *args)), args
    stats = lokid.call("queue.stats", {"project": str(proj)})
    assert sum(stats["states"].values()) == 0, "nothing was enqueued by a mistake"


def test_no_spawn_takes_the_usual_yes_and_no_spellings_and_refuses_others(lokid, proj, home):
    away = Lokid(lokid.root / "away")  # never started: nothing answers on its socket
    for word in ("1", "true", "YES", "on"):
        done = run(away, proj, home, "status", LOKICTL_NO_SPAWN=word)
        assert done.returncode == 3, (word, done.stderr)
        assert not away.socket.exists(), "lokictl started lokid although told not to"
    line = one_line_error(run(away, proj, home, "status", LOKICTL_NO_SPAWN="maybe"))
    assert "1, true, yes, on" in line and "0, false, no, off" in line
    state = str(home / "state")
    try:  # a "no" spelling: lokictl starts lokid (its log in a private state folder)
        pong = run(away, proj, home, "ping", LOKICTL_NO_SPAWN="Off", XDG_STATE_HOME=state)
        assert ok(pong).startswith("pong")
    finally:
        run(away, proj, home, "daemon", "stop")
    assert (home / "state" / "lokid" / "lokid.log").exists()


def test_caps_take_commas_as_well_as_repeats(lokid, proj, home):
    ok(run(lokid, proj, home, "queue", "add", "eng-qa", "--payload", '{"n": 1}'))
    ok(run(lokid, proj, home, "queue", "add", "eng-ops", "--payload", '{"n": 2}'))
    claim = ("--json", "queue", "claim", "--agent", "a")
    first = json.loads(ok(run(lokid, proj, home, *claim, "--cap", "eng-backend,eng-qa")))
    assert first["task"]["type"] == "eng-qa"
    second = json.loads(ok(run(lokid, proj, home, *claim, "--cap", "x", "--cap", "y,eng-ops")))
    assert second["task"]["type"] == "eng-ops"


# -- 8. duplicates ------------------------------------------------------------------------


def test_a_duplicate_says_what_it_matched_and_key_sets_another(lokid, proj, home):
    first = ok(run(lokid, proj, home, "queue", "add", "eng", "--payload", '{"action":"a"}'))
    other_type = ("queue", "add", "eng-frontend", "--payload", '{"action":"a"}')
    text = ok(run(lokid, proj, home, *other_type)).strip()
    assert text.startswith(f"duplicate of {first.strip()} (eng, pending), same payload"), text
    keyed = ok(run(lokid, proj, home, *other_type, "--key", "frontend-a")).strip()
    assert keyed != first.strip() and "duplicate" not in keyed
    again = ok(run(lokid, proj, home, *other_type, "--key", "frontend-a")).strip()
    assert again == f"duplicate of {keyed} (eng-frontend, pending), same idempotency key"


# -- 10. readable output -------------------------------------------------------------------


def test_on_a_terminal_states_are_columns_in_colour_and_times_are_relative(lokid, proj, home):
    ok(run(lokid, proj, home, "queue", "add", "eng", "--payload", '{"action": "build"}'))
    ok(run(lokid, proj, home, "queue", "add", "eng", "--payload", '{"action": "test"}'))
    ok(run(lokid, proj, home, "queue", "claim", "--agent", "a1", "--cap", "eng"))
    code, screen = run_pty(lokid, proj, home, "queue", "list")
    assert code == 0, screen
    rows = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in screen.splitlines()]
    assert rows[0].startswith("in-progress ") and rows[1].startswith("pending ")
    assert all(re.search(r" p\d+ +(now|\d+[smhd] ago) ", row) for row in rows[:2]), rows
    assert f"{ESC}36min-progress" in screen, "states are coloured on a terminal"
    assert ESC not in run_pty(lokid, proj, home, "queue", "list", NO_COLOR="1")[1]
    assert ESC not in run_pty(lokid, proj, home, "--no-color", "queue", "list")[1]
    piped = ok(run(lokid, proj, home, "queue", "list"))
    assert ESC not in piped and re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", piped)
    listed = json.loads(run_pty(lokid, proj, home, "--json", "queue", "list")[1])
    assert listed["tasks"][0]["createdAt"].endswith("Z"), "--json keeps ISO times"
    assert [t["state"] for t in listed["tasks"]] == ["in-progress", "pending"]


def test_queue_get_is_readable_without_json(lokid, proj, home):
    task = ok(run(lokid, proj, home, "queue", "add", "eng", "--payload", '{"action": "x"}'))
    code, screen = run_pty(lokid, proj, home, "--no-color", "queue", "get", task.strip())
    assert code == 0
    lines = screen.replace("\r", "").splitlines()
    assert lines[0].split() == ["id", task.strip()] and lines[1].split() == ["state", "pending"]
    created = next(line for line in lines if line.startswith("created"))
    assert re.fullmatch(r"created +\d\d:\d\d:\d\d \((now|\d+s ago)\)", created), created
    assert not screen.lstrip().startswith("{")


def test_status_lists_only_projects_that_exist(lokid, proj, home):
    gone = home / "gone"
    (gone / ".loki").mkdir(parents=True)
    ok(run(lokid, gone, home, "queue", "stats"))
    gone.rename(home / ".trash")  # gone at once, whatever lokid still writes into it
    ok(run(lokid, proj, home, "queue", "stats"))
    status = json.loads(ok(run(lokid, home, home, "--json", "status")))
    assert status["projects"] == [str(proj)]


# -- 11. conventions ---------------------------------------------------------------------


def test_version_help_and_did_you_mean(lokid, proj, home):
    assert re.fullmatch(r"lokictl \d+\.\d+\.\d+\n", ok(run(lokid, proj, home, "--version")))
    assert ok(run(lokid, proj, home, "help", "queue", "add")) == ok(
        run(lokid, proj, home, "queue", "add", "--help")
    )
    top = ok(run(lokid, proj, home, "--help"))
    assert "exit codes:" in top and "examples:" in top
    assert "did you mean 'status'?" in one_line_error(run(lokid, proj, home, "stauts"))
    assert "did you mean 'list'?" in one_line_error(run(lokid, proj, home, "queue", "lsit"))
    line = one_line_error(run(lokid, proj, home, "queue", "list", "--sate", "pending"))
    assert "did you mean --state?" in line
    listing = " ".join(ok(run(lokid, proj, home, "queue", "list", "--help")).split())
    assert "pending, in-progress, completed, dead-letter, cancelled" in listing
    claim = ok(run(lokid, proj, home, "queue", "claim", "--help"))
    assert "--lease SECONDS" in claim and "exit codes:" in claim and "examples:" in claim


def test_json_errors_fields_and_jq(lokid, proj, home):
    task = ok(run(lokid, proj, home, "queue", "add", "eng", "--priority", "high")).strip()
    missing = run(lokid, proj, home, "--json", "queue", "get", "nope")
    assert missing.returncode == 1
    assert json.loads(missing.stderr)["error"]["code"] == "not_found"
    usage = run(lokid, proj, home, "--json", "queue", "add", "--priority", "urgent")
    assert usage.returncode == 2 and json.loads(usage.stderr)["error"]["code"] == "usage"
    picked = json.loads(ok(run(lokid, proj, home, "--json=id,priority,state", "queue", "list")))
    assert picked == [{"id": task, "priority": 8, "state": "pending"}]
    one = json.loads(ok(run(lokid, proj, home, "queue", "get", task, "--json=type,state")))
    assert one == {"type": "eng", "state": "pending"}
    assert ok(run(lokid, proj, home, "queue", "list", "--jq", ".tasks[].id")).strip() == task
    bad = run(lokid, proj, home, "--json=nope", "queue", "list")
    assert bad.returncode == 2 and "available: " in bad.stderr
