"""The MCP server: the SDK's low-level `Server` wired to the tools and resources, on stdio.

The low-level server, not the SDK's decorator layer, because the schemas here come from
the wire's Structs rather than from Python signatures. The loop is anyio's default
(asyncio), the SDK's own; lokid's blocking client only ever runs in worker threads.
Serving both protocol eras the SDK speaks: handshake-era clients subscribe with
`resources/subscribe`, 2026-07-28 clients with `subscriptions/listen`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPError

from lokid import __version__
from lokid.mcp import errors, resources
from lokid.mcp.dropin import DropIn
from lokid.mcp.link import Link
from lokid.mcp.project import Projects
from lokid.mcp.tools import LEASE_GUIDE, TOOLS
from lokid.paths import resolve_socket_path

INSTRUCTIONS = (
    "lokid owns this project's task queue (durable, leased, with per-type circuit "
    "breakers). " + LEASE_GUIDE + " Leases are never released for you when this session "
    "ends: an unfinished task goes back to the queue when its lease runs out."
)


@dataclass(frozen=True)
class Settings:
    socket: Path
    spawn: bool
    projects: Projects
    agent: str

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        return cls(
            socket=resolve_socket_path(args.socket),
            spawn=not args.no_spawn,
            projects=Projects.find(args.project),
            agent=args.agent,
        )


class Bridge:
    """The handlers of one server: tools, drop-ins, resources and their subscriptions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.link = Link(settings.socket, settings.spawn)
        self.dropin = DropIn(settings.projects, settings.agent, self.link.call)
        self.updates = resources.Updates(self.link, settings.projects)
        self.listen = ListenHandler(self.updates.bus)
        self.tools = [
            *(spec.tool(settings.projects, settings.agent) for spec in TOOLS.values()),
            *self.dropin.tools(),
        ]

    def server(self) -> Server[Any]:
        return Server(
            "lokid",
            version=__version__,
            instructions=INSTRUCTIONS,
            lifespan=self.lifespan,
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
            on_list_resources=self.list_resources,
            on_read_resource=self.read_resource,
            on_subscribe_resource=self.subscribe,
            on_unsubscribe_resource=self.unsubscribe,
            on_subscriptions_listen=self.subscriptions_listen,
        )

    @asynccontextmanager
    async def lifespan(self, _: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.updates.deliver)
            try:
                yield {}
            finally:
                self.updates.close()
                self.listen.close()
                self.link.close()
                tg.cancel_scope.cancel()

    # -- tools ---------------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools)

    async def call_tool(
        self, ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        arguments = params.arguments or {}
        if params.name in self.dropin.handlers:
            return await self.dropin.handle(params.name, arguments)
        spec = TOOLS.get(params.name)
        if spec is None:  # the spec's answer to an unknown tool: a protocol error
            raise MCPError(types.INVALID_PARAMS, f"unknown tool: {params.name}")
        try:
            method_params = spec.params_for(arguments, self.settings.projects, self.settings.agent)
            result = await self.link.call(spec.method, method_params)
        except errors.EXPECTED as exc:
            return errors.as_tool_error(exc)
        return types.CallToolResult(
            content=[types.TextContent(text=json.dumps(result))], structured_content=result
        )

    # -- resources -----------------------------------------------------------------------

    async def list_resources(
        self, ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=resources.listing())

    async def read_resource(
        self, ctx: ServerRequestContext, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        try:
            project = self.settings.projects.resolve()
            text = await resources.read(params.uri, project, self.link.call)
        except KeyError:
            raise MCPError(types.INVALID_PARAMS, f"no resource {params.uri}") from None
        except errors.EXPECTED as exc:
            raise errors.as_protocol_error(exc) from exc
        contents = types.TextResourceContents(
            uri=params.uri, mime_type="application/json", text=text
        )
        return types.ReadResourceResult(contents=[contents])

    async def subscribe(
        self, ctx: ServerRequestContext, params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        try:
            self.updates.subscribe(params.uri, ctx.session)
        except KeyError:
            raise MCPError(types.INVALID_PARAMS, f"no resource {params.uri}") from None
        except errors.EXPECTED as exc:
            raise errors.as_protocol_error(exc) from exc
        return types.EmptyResult()

    async def unsubscribe(
        self, ctx: ServerRequestContext, params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        self.updates.subscribed.discard(params.uri)
        return types.EmptyResult()

    async def subscriptions_listen(
        self, ctx: ServerRequestContext, params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        if params.notifications.resource_subscriptions:
            self.updates.watch(params.notifications.resource_subscriptions)
        return await self.listen(ctx, params)


async def _serve(settings: Settings) -> None:
    server = Bridge(settings).server()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def serve(settings: Settings) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    logging.basicConfig(level=logging.WARNING, format="lokid mcp: %(message)s")
    anyio.run(_serve, settings)
