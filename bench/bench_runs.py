"""Container start and stop through lokid beside the docker CLI, on the same engine and image.

`run.start` (pull off) is timed from the request to the `run.started` event; beside it,
`docker run -d` with the same name, mount, workdir, labels and environment. `run.stop` is
timed to its reply; beside it, `docker stop` then `docker rm`. The two sides alternate, so
drift hits them alike; medians are printed side by side with their ratio.

The engine and registry come from tests/dockerenv.py (a private dockerd when none answers).

usage: python bench/bench_runs.py [--reps 10]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, LokidProcess

sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "clients")]
from dockerenv import DockerEnv  # noqa: E402

from lokictl import Client  # noqa: E402


def docker_cli() -> str:
    found = shutil.which("docker")
    if found is None:
        raise SystemExit("the docker CLI is needed (Debian: apt-get install docker.io)")
    return found


def lokid_start(client: Client, path: str) -> float:
    start = time.perf_counter()
    client.send("run.start", {"project": path, "pull": False})
    while True:
        event = client.next_event(timeout=60)
        if event["topic"] == "run.started" and event["project"] == path:
            return time.perf_counter() - start


def lokid_stop(client: Client, path: str) -> float:
    start = time.perf_counter()
    result = client.call("run.stop", {"project": path})
    elapsed = time.perf_counter() - start
    assert len(result["stopped"]) == 1, result
    return elapsed


def cli_start(docker: list[str], path: str, image: str) -> float:
    name = "loki-" + hashlib.sha256(path.encode()).hexdigest()[:12]
    cmd = [
        *docker,
        "run",
        "-d",
        "--name",
        name,
        "-v",
        f"{path}:/workspace:rw",
        "-w",
        "/workspace",
        "--label",
        "dev.loki.managed-by=bench",
        "--label",
        f"dev.loki.project={path}",
        *("-e", "LOKI_NOTIFICATIONS=false", "-e", "LOKI_SKIP_PROJECT_REGISTRY=1"),
        *("-e", "LOKI_NO_NEW_SESSION=1", "-e", "LOKI_DASHBOARD=false"),
        image,
        "start",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def cli_stop(docker: list[str], path: str) -> float:
    name = "loki-" + hashlib.sha256(path.encode()).hexdigest()[:12]
    start = time.perf_counter()
    subprocess.run([*docker, "stop", name], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*docker, "rm", name], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()

    env = DockerEnv().start()
    work = Path(tempfile.mkdtemp(prefix="lkbr-", dir="/tmp"))
    try:
        env.publish()
        env.pull(env.image)
        docker = [docker_cli(), "--host", env.host]
        home = work / "home"
        home.mkdir()
        lokid_env = {
            "DOCKER_HOST": env.host,
            "HOME": str(home),
            "LOKI_DOCKER_IMAGE": env.image,
        }
        with LokidProcess(env=lokid_env) as lokid, Client.connect(lokid.socket) as client:
            client.call("subscribe", {"topics": ["run.started"]})
            ours = str(work / "via-lokid")
            theirs = str(work / "via-cli")
            os.mkdir(ours)
            os.mkdir(theirs)
            starts: tuple[list[float], list[float]] = ([], [])
            stops: tuple[list[float], list[float]] = ([], [])
            for rep in range(args.reps + 1):  # the first round warms both up
                a, b = lokid_start(client, ours), cli_start(docker, theirs, env.image)
                c, d = lokid_stop(client, ours), cli_stop(docker, theirs)
                if rep:
                    for series, value in zip((*starts, *stops), (a, b, c, d), strict=True):
                        series.append(value)
        print(f"engine {env.host}, image {env.image}, {args.reps} repetitions, medians:")
        for what, (lokid_s, cli_s), cli_name in (
            ("start", starts, "docker run -d"),
            ("stop", stops, "docker stop + docker rm"),
        ):
            ml, mc = statistics.median(lokid_s), statistics.median(cli_s)
            print(
                f"  run.{what:<5} {ml * 1000:7.1f} ms   {cli_name:<24} {mc * 1000:7.1f} ms"
                f"   ratio {ml / mc:.2f}"
            )
    finally:
        env.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
