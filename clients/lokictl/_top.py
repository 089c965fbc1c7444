"""lokictl top: a live full-screen view of a project (or all of them), like htop for lokid.

curses (standard library) draws and reads keys; lokid's events say when to re-read, and a
timer keeps countdowns moving. Keys act through the same methods as the other commands.
"""

from __future__ import annotations

import argparse
import curses
import time
from dataclasses import dataclass, field
from typing import Any

from lokictl._base import EXIT_OK, json_text
from lokictl._client import Client, DaemonError, NotRunning, ProtocolError
from lokictl._look import Clock, parse_iso, span

HELP = (
    "p pause/resume  s stop  j/k select  r retry  d delete (dead letter)  "
    "enter follow  a all projects  q quit"
)
EVENTS_KEPT = 200


@dataclass
class View:
    """What is on screen, re-read from lokid when something changes."""

    project: str | None
    all_projects: bool = False
    projects: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] | None = None
    running: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    selected: int = 0
    following: str | None = None
    followed: dict[str, Any] | None = None
    message: str = ""
    said_at: float = 0.0
    confirm: str | None = None
    lost: bool = False

    def say(self, text: str) -> None:
        self.message, self.said_at = text, time.monotonic()

    def footer(self) -> str:
        if self.lost:
            return "lokid went away; reconnecting (q quits)"
        if self.confirm is not None or time.monotonic() - self.said_at < 5:
            return self.message
        return HELP

    def rows(self) -> list[tuple[str, dict[str, Any]]]:
        """The selectable lines: projects in the all-projects view, else tasks."""
        if self.all_projects:
            return [("project", p) for p in self.projects]
        return [("running", t) for t in self.running] + [("dead", t) for t in self.dead]

    def chosen(self) -> tuple[str, dict[str, Any]] | None:
        rows = self.rows()
        if not rows:
            return None
        self.selected = max(0, min(self.selected, len(rows) - 1))
        return rows[self.selected]


class Top:
    def __init__(self, client: Client, args: argparse.Namespace) -> None:
        self.client = client
        self.args = args
        self.view = View(args.project, all_projects=args.all or args.project is None)
        self.dirty = True
        self.last_read = 0.0

    # -- lokid ------------------------------------------------------------------------------

    def subscribe(self) -> None:
        self.client.call("subscribe", {"topics": ["*"]})

    def read(self) -> None:
        """Re-read what the screen shows."""
        v = self.view
        v.projects = self.client.call("project.list")["projects"]
        if not v.all_projects and v.project:
            p = {"project": v.project}
            v.status = self.client.call("project.status", p)
            if not v.events:  # what happened before top started: the project's last events
                v.events = [{**e, "project": v.project} for e in v.status.get("events") or []]
            if v.status.get("hasLoki"):
                listing = self.client.call("queue.list", p | {"state": "in-progress", "limit": 200})
                v.running = listing["tasks"]
                v.dead = self.client.call("dlq.list", p)["tasks"]
            else:
                v.running, v.dead = [], []
            if v.following:
                try:
                    v.followed = self.client.call("queue.get", p | {"id": v.following})
                except DaemonError as exc:
                    v.followed, v.following = None, None
                    v.say(exc.message)
        self.dirty = False
        self.last_read = time.monotonic()

    def drain_events(self) -> None:
        """Take the events that arrived; any of this view's project makes it re-read."""
        while True:
            try:
                event = self.client.next_event(0.001)
            except TimeoutError:
                return
            if event["topic"] == "resync":
                self.dirty = True
                continue
            mine = self.view.all_projects or event["project"] in (None, self.view.project)
            if mine:
                self.view.events.append(event)
                del self.view.events[:-EVENTS_KEPT]
                self.dirty = True

    def reconnect(self) -> bool:
        try:
            self.client = Client.connect(self.args.socket, spawn=False, timeout=5.0)
            self.subscribe()
        except (NotRunning, OSError, ProtocolError):
            return False
        self.view.lost = False
        self.view.say("reconnected")
        self.dirty = True
        return True

    # -- keys -------------------------------------------------------------------------------

    def key(self, ch: int) -> bool:
        """Act on a key; False to quit."""
        v = self.view
        if v.confirm is not None:
            action, v.confirm = v.confirm, None
            if ch in (ord("y"), ord("Y")):
                self.act(action)
            else:
                v.say("cancelled")
            return True
        if ch in (ord("q"), 27) and v.following:
            v.following, v.followed = None, None
            return True
        if ch in (ord("q"), ord("Q")):
            return False
        if ch in (ord("j"), curses.KEY_DOWN):
            v.selected += 1
        elif ch in (ord("k"), curses.KEY_UP):
            v.selected = max(0, v.selected - 1)
        elif ch == ord("a"):
            v.all_projects = not v.all_projects or v.project is None
            v.selected = 0
        elif ch in (10, 13, curses.KEY_ENTER):
            self.enter()
        elif ch == ord("p") and not v.all_projects:
            self.act("resume" if v.status and v.status["paused"] else "pause")
        elif ch == ord("s") and not v.all_projects:
            v.confirm = "stop"
            v.say("stop this project's run? (y/n)")
        elif ch in (ord("r"), ord("d")):
            row = v.chosen()
            if row is None or row[0] != "dead":
                v.say("select a dead letter first (j/k)")
            elif ch == ord("r"):
                self.act(f"retry {row[1]['id']}")
            else:
                v.confirm = f"delete {row[1]['id']}"
                v.say(f"delete {row[1]['id']}? (y/n)")
        self.dirty = True
        return True

    def enter(self) -> None:
        v = self.view
        row = v.chosen()
        if row is None:
            return
        kind, item = row
        if kind == "project":
            v.project, v.all_projects, v.selected = item["path"], False, 0
            v.events = [e for e in v.events if e["project"] in (None, v.project)]
        else:
            v.following = item["id"]

    def act(self, action: str) -> None:
        v = self.view
        verb, _, task = action.partition(" ")
        p = {"project": v.project}
        try:
            if verb in ("pause", "resume", "stop"):
                self.client.call(f"signal.{verb}", p)
                v.say({"pause": "paused", "resume": "resumed", "stop": "stopping"}[verb])
            else:
                self.client.call(f"dlq.{verb}", p | {"id": task, "note": "from lokictl top"})
                v.say(f"{task}: {'back to pending' if verb == 'retry' else 'deleted'}")
        except DaemonError as exc:
            v.say(f"{exc.code}: {exc.message}")

    # -- drawing ----------------------------------------------------------------------------

    def draw(self, screen: Any) -> None:
        screen.erase()
        height, width = screen.getmaxyx()
        lines = self.lines(Clock(True))
        for y, (text, attr) in enumerate(lines[: height - 1]):
            screen.addnstr(y, 0, text, width - 1, attr)
        footer = self.view.footer()
        screen.addnstr(height - 1, 0, footer.ljust(width - 1), width - 1, curses.A_REVERSE)
        screen.refresh()

    def lines(self, clock: Clock) -> list[tuple[str, int]]:
        v = self.view
        title = "all projects" if v.all_projects else (v.project or "")
        head = [(f"lokictl top  {title}  {time.strftime('%H:%M:%S')}", curses.A_BOLD)]
        if v.following and v.followed:
            return head + self.task_lines(v.followed, clock)
        if v.all_projects:
            return head + self.project_lines()
        return head + self.project_view(clock)

    def project_lines(self) -> list[tuple[str, int]]:
        out = [("", 0), ("  PROJECT".ljust(50) + "PENDING  RUNNING  DEAD  RUN", curses.A_BOLD)]
        for i, p in enumerate(self.view.projects):
            q = p.get("queue") or {}
            run = (p.get("run") or {}).get("state", "-")
            flag = "" if p.get("hasLoki") else "  (no .loki/)"
            flag = "  (missing)" if p.get("missing") else flag
            text = (
                f"{'>' if i == self.view.selected else ' '} {p['path'][:47]:48}"
                f"{q.get('pending', 0):7}  {q.get('in-progress', 0):7}  "
                f"{q.get('dead-letter', 0):4}  {run}{flag}"
            )
            out.append((text, curses.A_REVERSE if i == self.view.selected else 0))
        if not self.view.projects:
            out.append(("  no projects (lokictl init)", 0))
        return out + self.event_lines(Clock(True))

    def project_view(self, clock: Clock) -> list[tuple[str, int]]:
        st = self.view.status
        if st is None:
            return [("", 0), ("  reading...", 0)]
        flags = [f for f in ("paused", "stopping", "missing") if st.get(f)]
        out = [(f"  state: {', '.join(flags) or 'active'}", curses.A_BOLD if flags else 0)]
        run = st.get("run")
        if run:
            port = f" port {run['port']}" if run.get("port") else ""
            out.append((f"  run: {run['state']} {run['container']} ({run['image']}){port}", 0))
        else:
            why = f" ({st['runError'][:60]})" if st.get("runError") else ""
            out.append((f"  run: none{why}", 0))
        queue = st.get("queue") or {}
        out.append(("  queue: " + "  ".join(f"{k} {n}" for k, n in queue.items()), 0))
        out.append(("  breakers: " + self.breaker_text(st.get("breakers") or {}, clock), 0))
        running = "  IN PROGRESS".ljust(40) + "TYPE            AGENT       CLAIMED  LEASE"
        out += [("", 0), (running, curses.A_BOLD)]
        rows = self.view.rows()
        for i, (kind, task) in enumerate(rows):
            if kind == "dead" and (i == 0 or rows[i - 1][0] != "dead"):
                if not self.view.running:
                    out.append(("  (none)", 0))
                dead = "  DEAD LETTERS".ljust(40) + "TYPE            LAST ERROR"
                out += [("", 0), (dead, curses.A_BOLD)]
            out.append(self.task_row(i, kind, task, clock))
        if not rows:
            out.append(("  (none)", 0))
        return out + self.event_lines(clock)

    def task_row(self, i: int, kind: str, task: dict[str, Any], clock: Clock) -> tuple[str, int]:
        mark = ">" if i == self.view.selected else " "
        attr = curses.A_REVERSE if i == self.view.selected else 0
        head = f"{mark} {task['id'][:36]:38}{task['type'][:15]:16}"
        if kind == "running":
            agent = str(task.get("claimedBy"))[:11]
            claimed = clock.ago(task.get("claimedAt"))
            return f"{head}{agent:12}{claimed:9}{_lease(task, clock)}", attr
        return f"{head}{task.get('lastError') or ''}", attr

    @staticmethod
    def breaker_text(breakers: dict[str, Any], clock: Clock) -> str:
        parts = []
        for kind, b in breakers.items():
            if b["state"] == "closed":
                continue
            when = f" half-open {clock.ago(b['halfOpenAt'])}" if b.get("halfOpenAt") else ""
            parts.append(f"{kind} {b['state']}{when if b['state'] == 'open' else ''}")
        return ", ".join(parts) or "all closed"

    def event_lines(self, clock: Clock) -> list[tuple[str, int]]:
        out = [("", 0), ("  EVENTS", curses.A_BOLD)]
        for event in reversed(self.view.events[-12:]):
            data = _summary(event.get("data"))
            when = time.strftime("%H:%M:%S", time.localtime(parse_iso(event["time"])))
            out.append((f"  {when} {event['topic']} {data}", 0))
        return out

    def task_lines(self, reply: dict[str, Any], clock: Clock) -> list[tuple[str, int]]:
        from lokictl._look import Style
        from lokictl._queue_cli import task_text

        out = [("", 0), (f"  following {reply['task']['id']} (q or esc: back)", curses.A_BOLD)]
        out += [("  " + line, 0) for line in task_text(reply, Style(False), clock).splitlines()]
        return out

    # -- the loop ---------------------------------------------------------------------------

    def run(self, screen: Any) -> int:
        curses.curs_set(0)
        screen.timeout(100)
        self.subscribe()
        interval = max(0.2, self.args.interval)
        last_try = 0.0
        while True:
            try:
                if self.view.lost:
                    if time.monotonic() - last_try > 1 and self.reconnect():
                        continue
                    last_try = time.monotonic()
                else:
                    self.drain_events()
                    if self.dirty or time.monotonic() - self.last_read > interval:
                        self.read()
            except (ProtocolError, ConnectionError, TimeoutError):
                self.client.close()
                self.view.lost = True
            self.draw(screen)
            ch = screen.getch()
            if ch not in (-1, curses.KEY_RESIZE) and not self.key(ch):
                return EXIT_OK


def _summary(data: Any) -> str:
    """An event's data in one short line: `key=value` for plain values, JSON otherwise."""
    if not isinstance(data, dict):
        return "" if data is None else json_text(data)
    parts = []
    for key, value in data.items():
        if value is None or value == [] or value == {}:
            continue
        text = value if isinstance(value, str) else json_text(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def _lease(task: dict[str, Any], clock: Clock) -> str:
    """When the lease ends: lokid's `leaseUntil` when it sends it, else the claim time plus
    the task's timeout (the default lease; a heartbeat or --lease changes it)."""
    if task.get("leaseUntil"):
        return clock.ago(task["leaseUntil"])
    if task.get("claimedAt") and task.get("timeout"):
        ends = parse_iso(task["claimedAt"]) + float(task["timeout"])
        left = ends - clock.now
        return f"~in {span(left)}" if left > 0 else f"~{span(left)} ago"
    return "-"


def run_top(client: Client, args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("ESCDELAY", "25")  # esc answers at once, not after a second
    # The terminal's real size (ncurses asks the terminal when these are unset), not an
    # inherited $COLUMNS/$LINES that was true of some other terminal.
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
    top = Top(client, args)
    try:
        return curses.wrapper(top.run)
    except KeyboardInterrupt:
        return EXIT_OK
