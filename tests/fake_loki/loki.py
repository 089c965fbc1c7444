"""A stand-in for Loki Mode's `loki` CLI, its `dashboard` commands only (autonomy/loki's
cmd_dashboard_start|stop|url), for tests on a machine without Loki Mode.

Like the real one: the state is in $HOME/.loki/dashboard (dashboard.pid, port, host,
scheme, logs/dashboard.log); `start [--port P]` (default $LOKI_DASHBOARD_PORT, else 57374)
does nothing but say so when the recorded dashboard runs, fails when P is taken, else starts
the server in the background, waits for /health and prints a dozen coloured lines; `url
--format json` prints `{"running", "url", "scheme", "host", "port", "pid"}` (exit 1 when not
running); `stop` ends it.

The server answers /health and lists the registry as Loki Mode's dashboard does:
/api/running-projects (dashboard/server.py list_running_projects: a live `pid`, else, with no
pid, `.loki/session.json` status "running"; only folders that exist or runs that run) and
/api/registry/projects?include_inactive=true (every entry must have the keys and types of
its RegisteredProjectResponse, else 500 as FastAPI's response validation answers).

For the tests: every call is appended as a JSON line to $HOME/.loki/fake-loki-calls.jsonl;
LOKI_FAKE_HANG=1 makes `dashboard start` hang (a timeout test); LOKI_FAKE_NOISE=N prints N
more lines (output that must not reach the terminal).
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOME = Path(os.environ.get("HOME", "/"))
STATE = HOME / ".loki" / "dashboard"
PID_FILE = STATE / "dashboard.pid"
GREEN, CYAN, NC = "\033[0;32m", "\033[0;36m", "\033[0m"


def record(argv: list[str]) -> None:
    (HOME / ".loki").mkdir(parents=True, exist_ok=True)
    with open(HOME / ".loki" / "fake-loki-calls.jsonl", "a") as f:
        f.write(json.dumps({"argv": argv, "pid": os.getpid()}) + "\n")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def running_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def saved(name: str, default: str) -> str:
    try:
        return (STATE / name).read_text().strip() or default
    except OSError:
        return default


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def noise() -> None:
    for i in range(int(os.environ.get("LOKI_FAKE_NOISE", "0") or 0)):
        print(f"{CYAN}noise line {i}{NC}")


def start(args: list[str]) -> int:
    port = os.environ.get("LOKI_DASHBOARD_PORT", "57374")
    if "--port" in args:
        port = args[args.index("--port") + 1]
    if os.environ.get("LOKI_FAKE_HANG") == "1":
        print("Setting up dashboard virtualenv...", flush=True)
        time.sleep(3600)
    pid = running_pid()
    if pid is not None:
        print(f"\033[1;33mDashboard server already running (PID: {pid}){NC}")
        scheme, host, port = saved("scheme", "http"), saved("host", "127.0.0.1"), saved("port", "")
        print(f"  URL:  {scheme}://{host}:{port}")
        return 0
    PID_FILE.unlink(missing_ok=True)
    if port_taken(int(port)):
        print(f"\033[0;31mError: Port {port} is already in use{NC}")
        return 1
    (STATE / "logs").mkdir(parents=True, exist_ok=True)
    print(f"{GREEN}Starting dashboard server...{NC}")
    print(f"{CYAN}Host:{NC} 127.0.0.1\n{CYAN}Port:{NC} {port}")
    noise()
    with open(STATE / "logs" / "dashboard.log", "ab") as log:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", port],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    PID_FILE.write_text(f"{server.pid}\n")
    (STATE / "port").write_text(f"{port}\n")
    (STATE / "host").write_text("127.0.0.1\n")
    (STATE / "scheme").write_text("http\n")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                break
        except OSError:
            time.sleep(0.05)
    if server.poll() is not None:
        PID_FILE.unlink(missing_ok=True)
        print(f"\033[0;31mFailed to start dashboard server{NC}")
        return 1
    print(f"{GREEN}Dashboard (live run monitor) started{NC}\n\n  PID:  {server.pid}")
    print(f"  URL:  http://127.0.0.1:{port}\n\nOpen in browser: {CYAN}loki dashboard open{NC}")
    return 0


def url(args: list[str]) -> int:
    pid = running_pid()
    as_json = "json" in args
    if pid is None:
        print(
            '{"running":false,"error":"Dashboard server is not running"}'
            if as_json
            else "Dashboard server is not running"
        )
        return 1
    scheme, host, port = saved("scheme", "http"), saved("host", "127.0.0.1"), saved("port", "57374")
    address = f"{scheme}://{host}:{port}"
    if as_json:
        print(
            json.dumps(
                {
                    "running": True,
                    "url": address,
                    "scheme": scheme,
                    "host": host,
                    "port": int(port),
                    "pid": pid,
                },
                separators=(",", ":"),
            )
        )
    else:
        print(address)
    return 0


def stop() -> int:
    pid = running_pid()
    PID_FILE.unlink(missing_ok=True)
    if pid is None:
        print("Dashboard server is not running")
        return 0
    os.kill(pid, 15)
    print(f"Dashboard server stopped (PID: {pid})")
    return 0


# -- the dashboard server -------------------------------------------------------------------

REGISTERED = {  # RegisteredProjectResponse (dashboard/server.py): key -> (types, optional)
    "id": (str,),
    "path": (str,),
    "name": (str,),
    "alias": (str, type(None)),
    "registered_at": (str,),
    "updated_at": (str,),
    "last_accessed": (str, type(None)),
    "has_loki_dir": (bool,),
    "status": (str,),
}


def registry() -> list[dict]:
    try:
        data = json.loads((STATE / "projects.json").read_text())
    except (OSError, ValueError):
        return []
    return [p for p in data.get("projects", {}).values() if isinstance(p, dict)]


def running_projects() -> dict:
    out = []
    for p in registry():
        path, pid = p.get("path", ""), p.get("pid")
        has_pid = isinstance(pid, int) and pid > 0
        running = has_pid and alive(pid)
        if not running and not has_pid and path:
            with contextlib.suppress(Exception):
                session = json.loads((Path(path) / ".loki" / "session.json").read_text())
                running = session.get("status") == "running"
        if not (path and os.path.isdir(path)) and not running:
            continue
        out.append(
            {
                "id": p.get("id"),
                "name": p.get("name") or os.path.basename(path),
                "path": path,
                "port": p.get("port"),
                "status": p.get("status"),
                "running": running,
                "is_active": False,
            }
        )
    return {"projects": out, "active_project_dir": None}


def registered(include_inactive: bool) -> tuple[int, object]:
    projects = registry()
    if not include_inactive:
        projects = [p for p in projects if p.get("status") == "active"]
    for p in projects:
        for key, types in REGISTERED.items():
            if (
                key not in p
                or not isinstance(p[key], types)
                or (bool not in types and isinstance(p[key], bool))
            ):
                return 500, {"detail": f"response validation: {key} of {p.get('id')}"}
    return 200, projects


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        route, _, query = self.path.partition("?")
        if route == "/health":
            code, body = 200, {"status": "healthy"}
        elif route == "/api/running-projects":
            code, body = 200, running_projects()
        elif route == "/api/registry/projects":
            code, body = registered("include_inactive=true" in query)
        else:
            code, body = 404, {"detail": "Not Found"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        ThreadingHTTPServer(("127.0.0.1", int(argv[1])), Handler).serve_forever()
        return 0
    record(argv)
    if argv[:1] != ["dashboard"] or len(argv) < 2:
        print(f"\033[0;31mUnknown command: {' '.join(argv)}{NC}")
        return 1
    action, rest = argv[1], argv[2:]
    if action == "start":
        return start(rest)
    if action == "url":
        return url(rest)
    if action == "stop":
        return stop()
    print(f"\033[0;31mUnknown dashboard command: {action}{NC}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
