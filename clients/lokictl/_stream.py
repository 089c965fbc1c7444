"""Live streams (`events`, `run logs -f`): they run until ^C or until lokid goes away,
however quiet they are; `--reconnect` follows a restart of lokid."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lokictl._base import (
    EXIT_LOST,
    EXIT_OK,
    Failure,
    emit_json,
    json_text,
    typed_path,
    wants_json,
)
from lokictl._client import FOREVER, Client, NotRunning, ProtocolError
from lokictl._look import clock_for, style_for

GONE = "lokid went away (the connection closed)"


def follow_events(client: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"topics": args.topics or ["*"]}
    if args.project:
        params["project"] = typed_path(args.project)
    show = _printer(args)
    while True:
        try:
            client.call("subscribe", params)
            for event in client.stream():
                show(event)
        except (ProtocolError, ConnectionError):
            client.close()
            if not args.reconnect:
                raise Failure(f"{GONE}; --reconnect follows a restart", EXIT_LOST, "lost") from None
            print(f"lokictl: {GONE}; waiting for it to come back (^C to stop)", file=sys.stderr)
            client = reconnect(args)
            print("lokictl: reconnected; following again", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            return EXIT_OK


def reconnect(args: argparse.Namespace) -> Client:
    """Wait, without starting lokid, until it answers on the socket again."""
    from lokictl._base import request_timeout

    delay = 0.05
    while True:
        try:
            return Client.connect(args.socket, spawn=False, timeout=request_timeout())
        except (NotRunning, OSError):
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _printer(args: argparse.Namespace) -> Any:
    if wants_json(args):
        return lambda event: emit_json(args, event)
    style = style_for(args)
    human = clock_for(args).human

    def show(event: dict[str, Any]) -> None:
        when = _hms(event["time"]) if human else event["time"]
        where = f" [{event['project']}]" if event["project"] else ""
        data = json_text(event["data"]) if event["data"] is not None else ""
        topic = style(event["topic"], "bold")
        print(f"{when} {topic}{where} {data}".rstrip(), flush=True)

    return show


def _hms(iso: str) -> str:
    from lokictl._look import parse_iso

    return time.strftime("%H:%M:%S", time.localtime(parse_iso(iso)))


def follow_logs(client: Client, params: dict[str, Any], args: argparse.Namespace) -> int:
    """`run logs -f`: lines as run.log events for this request until the run ends."""
    msgid = client.send("run.logs", params)
    try:
        while True:
            try:
                event = client.next_event(FOREVER)
            except (ProtocolError, ConnectionError) as exc:
                raise Failure(f"{GONE} ({exc})", EXIT_LOST, "lost") from None
            data = event["data"] or {}
            if event["topic"] != "run.log" or data.get("id") != msgid:
                continue
            if data.get("end"):
                break
            print(json_text(event) if wants_json(args) else data["line"], flush=True)
    except KeyboardInterrupt:
        client.cancel(msgid)
        return EXIT_OK
    client.result(msgid)
    return EXIT_OK
