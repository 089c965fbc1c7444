"""The project's status and task lists as MCP resources, updated live from lokid's events.

    lokid://project/status        project.status
    lokid://queue/<state>         queue.list of one state (the first 1,000, oldest first)

A client that subscribes (`resources/subscribe` on handshake-era connections, a
`subscriptions/listen` stream on 2026-07-28 ones) starts the watcher: a thread holding a
connection of its own to lokid, subscribed to the project's `queue.*`, `breaker.*`,
`run.*`, `signal.*`, `project.*` and `status.changed` events. Each event marks the
resources it may have changed; a `resync` (lokid dropped events for us), or a reconnect,
marks them all. Every subscription gets one update once lokid's events are followed (at
once when they already are), so a change made between the client's read and the watcher's
own subscription at lokid is never missed. One task delivers what is marked:
`notifications/resources/updated` to the session's subscriptions and to the listen streams.
Marks made while it delivers coalesce, so a burst of events costs one notification per
resource, not one per event.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import mcp_types as types
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated

from lokictl import Client, DaemonError, ProtocolError
from lokid.mcp.link import Link, LokidUnavailable
from lokid.mcp.project import NoProject, Projects
from lokid.wire.queue import STATES

STATUS_URI = "lokid://project/status"
QUEUE_URI = "lokid://queue/{}"
ALL = (STATUS_URI, *(QUEUE_URI.format(state) for state in STATES))
TOPICS = ["queue.*", "breaker.*", "run.*", "signal.*", "project.*", "status.changed"]
LIST_LIMIT = 1000

# Which task lists each queue event may change (every event changes the status: it
# lists the last events). A queue topic not named here marks every list.
LISTS_OF = {
    "queue.enqueued": ("pending",),
    "queue.claimed": ("pending", "in-progress"),
    "queue.completed": ("in-progress", "completed"),
    "queue.retrying": ("in-progress", "pending"),
    "queue.dead-lettered": ("in-progress", "dead-letter"),
    "queue.cancelled": ("pending", "in-progress", "cancelled"),
    "queue.lease-expired": ("in-progress",),
    "queue.requeued": ("dead-letter", "pending"),
    "queue.deleted": ("dead-letter",),
    "queue.slowdown": (),
    "queue.quarantined": (),
}

# The watcher's reconnect delays: quick at first, at most this long once lokid is gone.
RECONNECT_FIRST, RECONNECT_MAX = 0.1, 2.0


def uris_for(event: dict[str, Any]) -> tuple[str, ...]:
    """The resources an event may have changed."""
    topic = event.get("topic", "")
    if topic == "resync":
        return ALL
    if not topic.startswith("queue."):
        return (STATUS_URI,)
    lists = LISTS_OF.get(topic, STATES)
    return (STATUS_URI, *(QUEUE_URI.format(state) for state in lists))


def listing() -> list[types.Resource]:
    status = types.Resource(
        uri=STATUS_URI,
        name="project-status",
        title="Project status",
        description="The project at a glance (project.status): paused or stopping, signals, "
        "the container run, task counts, breakers, the last events.",
        mime_type="application/json",
    )
    lists = [
        types.Resource(
            uri=QUEUE_URI.format(state),
            name=f"tasks-{state}",
            title=f"Tasks {state}",
            description=f"The project's {state} tasks, oldest first (at most "
            f"{LIST_LIMIT}; a non-null cursor means more: page with the queue_list tool).",
            mime_type="application/json",
        )
        for state in STATES
    ]
    return [status, *lists]


async def read(uri: str, project: str, call: Callable[[str, dict], Awaitable[Any]]) -> str:
    """The resource's JSON text; raises `KeyError` for a URI that is not ours."""
    if uri == STATUS_URI:
        body = await call("project.status", {"project": project})
    elif uri in ALL:
        state = uri.rsplit("/", 1)[1]
        page = await call("queue.list", {"project": project, "state": state, "limit": LIST_LIMIT})
        body = {"state": state, **page}
    else:
        raise KeyError(uri)
    return json.dumps(body)


class Updates:
    """Who wants to hear of which resource, and the watcher that tells them."""

    def __init__(self, link: Link, projects: Projects) -> None:
        self.link = link
        self.projects = projects
        self.bus = InMemorySubscriptionBus()
        self.session: ServerSession | None = None  # the handshake-era subscriber
        self.subscribed: set[str] = set()
        self._dirty: set[str] = set()
        self._wake = anyio.Event()
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._watcher: threading.Thread | None = None
        self._closed = threading.Event()
        self._live = False  # the watcher is subscribed at lokid (read on the loop only)

    async def deliver(self) -> None:
        """Send what is marked, forever (run in the server's lifespan task group)."""
        self._token = anyio.lowlevel.current_token()
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            dirty, self._dirty = self._dirty, set()
            for uri in sorted(dirty):
                if uri in self.subscribed and self.session is not None:
                    await self._notify_session(uri)
                await self.bus.publish(ResourceUpdated(uri))

    async def _notify_session(self, uri: str) -> None:
        """A session whose client has gone stops being told; the server carries on."""
        assert self.session is not None
        try:
            await self.session.send_resource_updated(uri)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.session = None

    def mark(self, uris: Iterable[str]) -> None:
        """Mark resources changed (on the event loop)."""
        self._dirty.update(uris)
        self._wake.set()

    def subscribe(self, uri: str, session: ServerSession) -> None:
        if uri not in ALL:
            raise KeyError(uri)
        self.projects.resolve()  # outside a project there is nothing to follow: say so
        self.session = session
        self.subscribed.add(uri)
        self.watch([uri])

    def watch(self, uris: Iterable[str]) -> None:
        """A client asked to hear of `uris`: start the watcher once; when it already
        follows lokid's events, the subscription's one update is due now. (A listen
        stream registers with the bus before it first waits, and the delivery task runs
        only after that, so the update reaches it.)"""
        try:
            self.projects.resolve()
        except NoProject:
            return
        if self._live:
            self.mark(uris)
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="lokid-events", daemon=True)
            self._watcher.start()

    def close(self) -> None:
        """Stop delivering. The watcher, a daemon thread perhaps blocked reading its
        connection, leaves at its next wake-up or with the process."""
        self._closed.set()

    # -- the watcher thread ----------------------------------------------------------------

    def _watch(self) -> None:
        """Follow lokid's events until closed. Only the first connection may start lokid;
        reconnects never do (a `lokictl daemon stop` stays stopped, as in the editors)."""
        project = self.projects.resolve()
        spawn, delay = self.link.spawn, RECONNECT_FIRST
        while not self._closed.is_set():
            try:
                client = self.link.connect(spawn=spawn, timeout=None)
            except LokidUnavailable:
                spawn = False
                self._closed.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            spawn, delay = False, RECONNECT_FIRST
            try:
                self._follow(client, project)
            except (ProtocolError, DaemonError, OSError):
                pass
            finally:
                client.close()
                self._on_loop(self._set_live, False)

    def _follow(self, client: Client, project: str) -> None:
        client.call("subscribe", {"topics": TOPICS, "project": project})
        # Whatever changed before this subscription (or while lokid was away) is unseen.
        self._on_loop(self._set_live, True)
        while not self._closed.is_set():
            self._on_loop(self.mark, uris_for(client.next_event()))

    def _set_live(self, live: bool) -> None:
        self._live = live
        if live:
            self.mark(ALL)

    def _on_loop(self, func: Callable[[Any], None], arg: Any) -> None:
        """Run `func(arg)` on the event loop, from the watcher thread."""
        while self._token is None and not self._closed.is_set():  # deliver() not started yet
            time.sleep(0.01)
        try:
            anyio.from_thread.run_sync(func, arg, token=self._token)
        except anyio.RunFinishedError:
            self._closed.set()
