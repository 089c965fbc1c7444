"""lokictl work: a queue worker that runs a command for each task it claims.

    lokictl work --cap build -- loki start -- {spec}

Claims one task of its capabilities, runs the command for it (an argv list, never a shell:
`{spec}`, `{id}`, `{type}` and `{payload}` inside an argument are replaced by the task's
values; the whole task is in the environment as LOKI_TASK_JSON), heartbeats while it runs,
then completes the task when the command exits 0 and fails it otherwise (the queue's retries,
backoff and dead-letter queue take it from there). SIGTERM or SIGINT let the current command
finish and report before the worker exits; a second one terminates the command.

`--once` (or LOKI_QUEUE_ONESHOT=1, which Loki Mode's Helm chart sets for its KEDA
ScaledJob) processes exactly one task and exits with the command's code (0 when the queue
had nothing ready), so it stands in for Loki Mode's `autonomy/queue-consumer.sh` as the
chart's `queue.command`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import msgspec

from lokictl._client import Client, DaemonError, NotRunning, ProtocolError

PLACEHOLDERS = ("spec", "id", "type", "payload")
EMPTY_POLL = 5.0  # the longest wait between claims while nothing is ready (events wake it)
REPORT_PATIENCE = 120.0  # how long the outcome is retried while lokid cannot be reached
_GONE = ("conflict", "not_found")  # the task is no longer ours: cancelled, or lease lost


def add_work_command(sub: Any) -> None:
    from lokictl._command import command
    from lokictl._queue_cli import seconds, words

    work = command(
        sub,
        "work",
        "claim tasks and run a command for each (a queue worker): argv, never a shell;"
        " {spec} {id} {type} {payload} are replaced; heartbeats; completes on exit 0, else"
        " fails. SIGTERM: the current task finishes first",
        "  lokictl work --cap build -- make {spec}\n"
        "  lokictl work --cap eng --once -- ./run-task.sh {id}      one task, its exit code",
        where="required",
    )
    work.add_argument(
        "--cap",
        type=words,
        action="extend",
        required=True,
        help="task types it can do (repeat, or comma-separated)",
    )
    work.add_argument("--agent", help="the name leases are held under (default: work-HOST-PID)")
    work.add_argument(
        "--lease", type=seconds, metavar="SECONDS", help="lease in seconds (default: the task's)"
    )
    work.add_argument(
        "--once",
        action="store_true",
        default=os.environ.get("LOKI_QUEUE_ONESHOT") == "1",
        help="one task, then exit with its command's code (env LOKI_QUEUE_ONESHOT=1)",
    )
    work.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the command and its args")


class Stop:
    """SIGTERM/SIGINT: the first asks to stop after the current task, the second to stop it."""

    def __init__(self) -> None:
        self.count = 0
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.count += 1
        what = "after the current task" if self.count == 1 else "now: terminating the command"
        print(f"lokictl work: {signal.Signals(signum).name}, stopping {what}", file=sys.stderr)


def command_for(template: list[str], task: dict[str, Any]) -> list[str]:
    """The argv for one task: placeholders replaced inside arguments, never re-split."""
    payload = task.get("payload") or {}
    values = {
        "id": task["id"],
        "type": task["type"],
        "payload": msgspec.json.encode(payload).decode(),
        "spec": payload.get("spec") if isinstance(payload.get("spec"), str) else None,
    }
    argv = []
    for arg in template:
        for name in PLACEHOLDERS:
            mark = "{" + name + "}"
            if mark in arg:
                value = values[name]
                if value is None:
                    raise ValueError(f"the task has no payload.{name} for {mark}")
                if arg == mark and value.startswith("-"):
                    raise ValueError(f"payload.{name} starts with '-' and would be an option")
                arg = arg.replace(mark, value)
        argv.append(arg)
    return argv


class Worker:
    def __init__(self, client: Client, args: argparse.Namespace) -> None:
        self.client = client
        self.args = args
        self.project = args.project
        self.agent = args.agent or f"work-{socket.gethostname()}-{os.getpid()}"
        self.template = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        self.stop = Stop()

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        return self.client.call(method, {"project": self.project, **params})

    def _reconnect(self) -> None:
        with contextlib.suppress(OSError):
            self.client.close()
        self.client = Client.connect(self.args.socket, spawn=not self.args.no_spawn)
        self.client.call("subscribe", {"topics": ["queue.*"], "project": self.project})

    def run(self) -> int:
        self.client.call("subscribe", {"topics": ["queue.*"], "project": self.project})
        while not self.stop.count:
            claimed = self._claim()
            task = claimed.get("task")
            if task is None:
                if self.args.once:
                    self._say("nothing to do", {"task": None, "blocked": claimed.get("blocked")})
                    return 0
                self._wait_for_work()
                continue
            code = self._process(task)
            if self.args.once:
                return code
        return 0

    def _claim(self) -> dict[str, Any]:
        """One claim; in loop mode, lokid restarting or its database being away is waited
        out (one-shot mode reports it: the Job fails and is retried by its controller)."""
        params = {"agent": self.agent, "capabilities": self.args.cap, "lease": self.args.lease}
        while True:
            try:
                return self._call("queue.claim", params)
            except DaemonError as exc:
                if self.args.once or exc.code != "unavailable":
                    raise
                print(f"lokictl work: {exc.message}; trying again", file=sys.stderr)
            except (ProtocolError, OSError):
                if self.args.once:
                    raise
                with contextlib.suppress(NotRunning, OSError):
                    self._reconnect()
            if self.stop.count:
                return {"task": None}
            time.sleep(1.0)

    def _wait_for_work(self) -> None:
        """Until something happens in the project's queue (or a while has passed)."""
        deadline = time.monotonic() + EMPTY_POLL
        while not self.stop.count and time.monotonic() < deadline:
            try:
                event = self.client.next_event(timeout=min(0.5, EMPTY_POLL))
            except TimeoutError:
                continue
            if event["topic"] != "queue.claimed":
                return

    def _process(self, task: dict[str, Any]) -> int:
        try:
            argv = command_for(self.template, task)
        except ValueError as exc:
            self._report(task, 2, time.monotonic(), f"bad task: {exc}")
            return 2
        env = {**os.environ, "LOKI_TASK_ID": task["id"], "LOKI_TASK_TYPE": task["type"]}
        env["LOKI_TASK_JSON"] = msgspec.json.encode(task).decode()
        started = time.monotonic()
        self._say(f"task {task['id']} ({task['type']}): running {argv[0]}", {"task": task["id"]})
        try:
            # Its own session: a ^C meant for the worker does not reach the command, which
            # finishes its task unless the worker is asked twice.
            proc = subprocess.Popen(argv, env=env, start_new_session=True)
        except OSError as exc:
            self._report(task, 127, started, f"cannot run {argv[0]}: {exc.strerror or exc}")
            return 127
        code = self._supervise(proc, task)
        self._report(task, code, started, None)
        return code

    def _supervise(self, proc: subprocess.Popen[bytes], task: dict[str, Any]) -> int:
        """Wait for the command, heartbeating its lease; a second signal or the task being
        taken from us (cancelled, its lease lost) terminates it."""
        lease = float(self.args.lease or task.get("timeout") or 300)
        every = max(0.2, lease / 3)
        next_beat = time.monotonic() + every
        terminated = False
        while True:
            try:
                return proc.wait(timeout=max(0.0, min(0.2, next_beat - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
            if self.stop.count > 1 and not terminated:
                terminated = self._terminate(proc)
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + every
                if not self._heartbeat(task, lease) and not terminated:
                    terminated = self._terminate(proc)

    def _heartbeat(self, task: dict[str, Any], lease: float) -> bool:
        """False when the task is no longer ours."""
        try:
            self._call("queue.heartbeat", {"id": task["id"], "agent": self.agent, "lease": lease})
        except DaemonError as exc:
            if exc.code in _GONE:
                print(f"lokictl work: {exc.message}; stopping the command", file=sys.stderr)
                return False
        except (ProtocolError, OSError):
            with contextlib.suppress(NotRunning, OSError):
                self._reconnect()  # lokid restarted: the lease is in the database
        return True

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> bool:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        return True

    def _report(self, task: dict[str, Any], code: int, started: float, why: str | None) -> None:
        """Complete (exit 0) or fail the task, retrying while lokid cannot be reached."""
        seconds = round(time.monotonic() - started, 3)
        base = {"id": task["id"], "agent": self.agent}
        if code == 0:
            report = {"exitCode": 0, "seconds": seconds, "command": self.template[:1]}
            method, params = "queue.complete", {**base, "result": {"decisionReport": report}}
        else:
            error = why or (f"killed by signal {-code}" if code < 0 else f"exit {code}")
            method, params = "queue.fail", {**base, "error": error}
        deadline = time.monotonic() + REPORT_PATIENCE
        while True:
            try:
                state = self._call(method, params)["state"]
                break
            except DaemonError as exc:
                if exc.code != "unavailable" or time.monotonic() > deadline:
                    state = f"not reported ({exc.code}: {exc.message})"
                    break
            except (ProtocolError, OSError, NotRunning):
                if time.monotonic() > deadline:
                    state = "not reported (lokid unreachable)"
                    break
                with contextlib.suppress(NotRunning, OSError):
                    self._reconnect()
            time.sleep(0.5)
        self._say(
            f"task {task['id']}: exit {code}, {state} ({seconds}s)",
            {"task": task["id"], "exitCode": code, "state": state, "seconds": seconds},
        )

    def _say(self, text: str, data: dict[str, Any]) -> None:
        if self.args.json:
            print(msgspec.json.encode(data).decode(), flush=True)
        else:
            print(f"lokictl work: {text}", file=sys.stderr, flush=True)


def cmd_work(client: Client, args: argparse.Namespace) -> int:
    template = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not template:
        print(
            "lokictl work: give the command after --, e.g. -- loki start -- {spec}", file=sys.stderr
        )
        return 2
    return Worker(client, args).run()


WORK_COMMANDS = {"work": cmd_work}
