"""Progress for people on `lokictl run start` / `run stop`, nothing extra for scripts: the
real lokictl on a pseudo-terminal against a real lokid, Docker engine and registry."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
from clisupport import LOKICTL, in_pty, user_env
from test_runs import spawn, stop_file

pytestmark = pytest.mark.docker

PLAIN = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_run_start_shows_pull_progress_and_stop_a_spinner_on_a_terminal_only(engine, tmp_short):
    lokid = spawn(engine, tmp_short)
    try:
        app = tmp_short / "app"
        (app / ".loki").mkdir(parents=True)
        home = tmp_short / "home"
        env = user_env(lokid, app, home)
        engine.publish()  # a new build in the registry: this start pulls it, layer by layer
        code, screen = in_pty([*LOKICTL, "run", "start"], env, app)
        text = PLAIN.sub("", screen)
        assert code == 0, text
        assert re.search(r"[0-9a-f]{12} (Downloading|Download complete|Pull complete)", text), text
        assert re.search(r"\d+(\.\d+)?/\d+(\.\d+)? (bytes|kB|MB)", text), "bytes done/total"
        assert re.search(r"started loki-[0-9a-f]{12}", text)

        code, screen = in_pty([*LOKICTL, "run", "stop", "--grace", "2"], env, app)
        text = PLAIN.sub("", screen)
        assert code == 0, text
        assert "stopping the run" in text and re.search(r"0:00:0\d", text), "spinner, seconds"
        assert re.search(r"stopped loki-[0-9a-f]{12}", text)

        engine.publish()
        piped = subprocess.run(
            [*LOKICTL, "--json", "run", "start"], env=env, cwd=app, capture_output=True, text=True
        )
        assert piped.returncode == 0 and piped.stderr == ""
        assert json.loads(piped.stdout)["pulled"] is True, "a pull happened, silently"
        code, screen = in_pty([*LOKICTL, "--json", "run", "stop"], env, app)
        assert code == 0 and "\x1b[" not in screen and json.loads(screen)["stopped"]
    finally:
        lokid.kill()


def test_run_logs_follow_outlives_a_quiet_run_and_exits_4_when_lokid_goes(engine, tmp_short):
    """`run logs -f` is a stream: a quiet container (1 s request timeout here, 30 s by
    default) does not end it; lokid going away ends it with exit 4 and a message."""
    lokid = spawn(engine, tmp_short)
    try:
        app = tmp_short / "app"
        (app / ".loki").mkdir(parents=True)
        env = user_env(lokid, app, tmp_short / "home", LOKICTL_TIMEOUT="1")
        engine.publish()
        engine.pull(engine.image)
        started = subprocess.run(
            [*LOKICTL, "run", "start", "--no-pull"], env=env, cwd=app, capture_output=True
        )
        assert started.returncode == 0, started.stderr
        follow = subprocess.Popen(
            [*LOKICTL, "run", "logs", "-f"],
            env=env,
            cwd=app,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert follow.stdout.readline().startswith("loki args: start")
        quiet = time.monotonic() + 3  # the container prints nothing now
        while time.monotonic() < quiet:
            assert follow.poll() is None, follow.communicate()
            time.sleep(0.1)
        lokid.kill()
        _, err = follow.communicate(timeout=20)
        assert follow.returncode == 4, err
        assert "lokid went away" in err and "Traceback" not in err
    finally:
        lokid.kill()
        stop_file(str(tmp_short / "app"))
