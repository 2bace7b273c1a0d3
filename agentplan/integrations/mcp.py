"""MCP servers as resources: their tools and prompts become the agent's, under their own names.

``MCPServer(endpoint="http://host:port/mcp")`` speaks streamable HTTP; ``MCPServer(command=[...])``
starts a stdio server. When a plan is built the server is asked once for its tools and prompts
(a short-lived connection), so a chat model setup names them like any other resource
(``tools=["add"]``, ``prompt="ask_sum"``). Tool calls go over one long-lived session per server,
opened at the first call on the engine's event loop and owned by a task of its own (the SDK's
transports are anyio task groups: they must be entered and left by one task, and a transport
that dies cancels that task, not the caller). A call that fails because the server went away
raises :class:`TransientError`: the engine's retry layer runs the action again, and the next call
opens a new session. The built-in tool action journals every tool result, so a committed MCP
call is never repeated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2

from agentplan.chat_message import ChatMessage, MessageRole
from agentplan.exceptions import PlanCompileError, ResourceError, TransientError
from agentplan.prompts import Prompt
from agentplan.resources import Resource, ResourceDescriptor, ResourceType
from agentplan.tools import Tool

if TYPE_CHECKING:
    from mcp import Client

logger = logging.getLogger(__name__)

_MAX_PAGES = 100  # listings a server pages through: bounded, a paginator that never ends cannot hang start-up
# JSON-RPC codes that say the request reached a live server which refused it: not worth retrying.
_PERMANENT_CODES = frozenset({-32600, -32601, -32602, -32700})


class MCPToolError(Exception):
    """The MCP server ran the tool and reported an error (``isError``); the model sees the text."""


class MCPServer(Resource):
    """An MCP server: streamable HTTP at ``endpoint``, or a stdio server started with ``command``.

    ``headers`` go with every HTTP request (e.g. ``Authorization``); ``auth`` authenticates them as
    in Flink Agents: an ``httpx.Auth`` (e.g. ``httpx.BasicAuth``, or an OAuth flow), a
    ``(user, password)`` pair or a function of the request. ``timeout`` bounds one request
    (connect, a tool call) in seconds; ``sse_read_timeout`` bounds a wait on the server's event
    stream. ``env``/``cwd`` apply to a stdio server's process (its environment is the SDK's safe
    default plus ``env``).
    """

    resource_type = ResourceType.MCP_SERVER

    def __init__(self, endpoint: str | None = None, *, headers: dict[str, str] | None = None,
                 timeout: float = 30.0, sse_read_timeout: float = 300.0, auth: Any = None,
                 command: list[str] | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        if (endpoint is None) == (command is None):
            raise ResourceError("MCPServer needs exactly one of endpoint= (streamable HTTP) or command= (stdio)")
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ResourceError(f"MCPServer endpoint must be an http(s) URL, got {endpoint!r}")
        if command is not None and (not isinstance(command, list) or not command
                                    or not all(isinstance(part, str) for part in command)):
            raise ResourceError(f"MCPServer command must be a non-empty list of strings, got {command!r}")
        if timeout <= 0 or sse_read_timeout <= 0:
            raise ResourceError("MCPServer timeout and sse_read_timeout must be > 0")
        if auth is not None and command is not None:
            raise ResourceError("MCPServer auth= applies to an HTTP endpoint, not to a stdio command")
        self.auth = auth
        self._http_auth = http_auth(auth) if auth is not None else None
        self.endpoint = endpoint
        self.headers = dict(headers or {})
        self.timeout = float(timeout)
        self.sse_read_timeout = float(sse_read_timeout)
        self.command = list(command) if command is not None else None
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._session: _Session | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def address(self) -> str:
        """Where the server is, for messages: the endpoint or the command line."""
        return self.endpoint or " ".join(self.command or [])

    # -- connections -------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[Client]:
        """A new client session (entered and left by the calling task)."""
        from mcp import Client, StdioServerParameters
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        if self.command is not None:
            params = StdioServerParameters(command=self.command[0], args=self.command[1:], env=self.env, cwd=self.cwd)
            async with Client(params, read_timeout_seconds=self.timeout, cache=None) as client:
                yield client
            return
        assert self.endpoint is not None
        http = create_mcp_http_client(headers=self.headers or None, auth=self._http_auth,
                                      timeout=httpx2.Timeout(self.timeout, read=self.sse_read_timeout))
        async with http:
            transport = streamable_http_client(self.endpoint, http_client=http)
            async with Client(transport, read_timeout_seconds=self.timeout, cache=None) as client:
                yield client

    async def _client(self) -> Client:
        """The long-lived session of this loop, opened (again) when there is none or it broke."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop (another local execute()): the old session died with its loop
            self._loop, self._lock, self._session = loop, asyncio.Lock(), None
        assert self._lock is not None
        async with self._lock:
            session = self._session
            if session is None or session.broken:
                if session is not None:
                    logger.info("MCP server %s: session lost, reconnecting", self.address)
                    session.close()
                session = self._session = _Session(self)
                try:
                    await asyncio.wait_for(asyncio.shield(session.opened), self.timeout)
                except asyncio.CancelledError:
                    session.close()
                    raise
                except Exception as exc:  # noqa: BLE001 - classified: transient unless the server refused us
                    session.close()
                    raise _classify(exc, f"MCP server {self.address}: cannot connect") from exc
            return session.client

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call a tool; its structured result if it has one, else its text."""
        client = await self._client()
        try:
            result = await asyncio.wait_for(client.call_tool(name, arguments), self.timeout)
        except asyncio.CancelledError:  # the caller is being cancelled (shutdown); the session lives on
            raise
        except Exception as exc:  # noqa: BLE001 - classified: transient unless the server refused the call
            error = _classify(exc, f"MCP server {self.address}: tool {name!r}")
            if isinstance(error, TransientError) and self._session is not None:
                self._session.broken = True  # the next call reconnects
            raise error from exc
        text = "\n".join(getattr(part, "text", "") for part in result.content if getattr(part, "text", None))
        if result.is_error:
            raise MCPToolError(text or f"tool {name!r} failed")
        if result.structured_content is not None:
            return result.structured_content
        return text

    async def aclose(self) -> None:
        """Close the session of the running loop (the plan calls this when the engine stops)."""
        session, self._session = self._session, None
        if session is not None and self._loop is asyncio.get_running_loop():
            await session.aclose()

    # -- discovery ---------------------------------------------------------------------------------
    def discover(self) -> tuple[list[MCPTool], dict[str, Prompt]]:
        """The server's tools and prompts, asked once over a short-lived session.

        Runs its own event loop in a helper thread: plans are built both outside and inside a
        running loop. Each prompt is fetched with every argument set to its own ``{placeholder}``,
        so it becomes a local template that the chat action fills like any other prompt.
        """
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mcp-discover") as pool:
            return pool.submit(asyncio.run, self._discover()).result()

    async def _discover(self) -> tuple[list[MCPTool], dict[str, Prompt]]:
        async def ask() -> tuple[list[MCPTool], dict[str, Prompt]]:
            async with self.connect() as client:
                tools: list[MCPTool] = []
                cursor: str | None = None
                for _ in range(_MAX_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools += [MCPTool(self, t.name, t.description or t.name, t.input_schema) for t in page.tools]
                    if not (cursor := page.next_cursor):
                        break
                prompts: dict[str, Prompt] = {}
                capabilities = client.server_capabilities
                if capabilities is None or capabilities.prompts is not None:
                    cursor = None
                    for _ in range(_MAX_PAGES):
                        listing = await client.list_prompts(cursor=cursor)
                        for p in listing.prompts:
                            template = await self._prompt_template(client, p.name, [a.name for a in p.arguments or []])
                            if template is not None:
                                prompts[p.name] = template
                        if not (cursor := listing.next_cursor):
                            break
                return tools, prompts

        return await asyncio.wait_for(ask(), self.timeout)

    async def _prompt_template(self, client: Client, name: str, arguments: list[str]) -> Prompt | None:
        """The prompt rendered with each argument as its own placeholder; None (and a warning) when the
        server cannot render it so, e.g. for an argument that must be a number."""
        from mcp import MCPError

        try:
            rendered = await client.get_prompt(name, {a: "{" + a + "}" for a in arguments})
        except MCPError as exc:
            logger.warning("MCP server %s: prompt %r is not registered: it cannot be rendered as a template (%s)",
                           self.address, name, exc.message)
            return None
        return Prompt.from_messages([ChatMessage(role=MessageRole(m.role), content=getattr(m.content, "text", ""))
                                     for m in rendered.messages])

    def __repr__(self) -> str:
        return f"MCPServer({self.address})"


def http_auth(auth: Any) -> httpx2.Auth:
    """``auth`` for the MCP SDK's HTTP client (``httpx2``). Flink Agents code passes an ``httpx.Auth``,
    which httpx2 does not take as one: its request flow (the same generator protocol) is wrapped."""
    if isinstance(auth, httpx2.Auth):
        return auth
    if isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(part, (str, bytes)) for part in auth):
        return httpx2.BasicAuth(*auth)
    if callable(getattr(auth, "auth_flow", None)):
        return _ForeignAuth(auth)
    if callable(auth):
        return httpx2.FunctionAuth(auth)
    raise ResourceError(f"MCPServer auth must be an httpx.Auth, a (user, password) pair or a function of the "
                        f"request, got {type(auth).__name__}")


class _ForeignAuth(httpx2.Auth):
    """An ``httpx.Auth`` (or any object with its ``auth_flow``) driving httpx2's requests."""

    def __init__(self, auth: Any) -> None:
        self.auth = auth
        self.requires_request_body = bool(getattr(auth, "requires_request_body", False))
        self.requires_response_body = bool(getattr(auth, "requires_response_body", False))

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        return self.auth.auth_flow(request)


class MCPTool(Tool):
    """A tool of an MCP server; calls go to the server."""

    def __init__(self, server: MCPServer, name: str, description: str, input_schema: dict[str, Any]) -> None:
        self.server = server
        self.name = name
        self.description = description
        self.input_schema = input_schema

    def schema(self) -> dict[str, Any]:
        params = {k: v for k, v in self.input_schema.items() if k != "title"}
        params["properties"] = {name: {k: v for k, v in prop.items() if k != "title"}
                                for name, prop in (params.get("properties") or {}).items()}
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": params}}

    async def call(self, arguments: dict[str, Any]) -> Any:
        return await self.server.call_tool(self.name, arguments)

    def __repr__(self) -> str:
        return f"MCPTool({self.name} @ {self.server.address})"


class _Session:
    """One client session, owned by a task of its own on the running loop."""

    def __init__(self, server: MCPServer) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[Client] = loop.create_future()
        self.broken = False
        self._stop = asyncio.Event()
        self._task = loop.create_task(self._own(server), name=f"mcp-session {server.address}")

    @property
    def client(self) -> Client:
        return self.opened.result()

    async def _own(self, server: MCPServer) -> None:
        try:
            async with server.connect() as client:
                if self.opened.done():  # given up on while connecting
                    return
                self.opened.set_result(client)
                await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - a dying transport cancels this task: that ends the session
            if not self.opened.done():
                self.opened.set_exception(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
            logger.debug("MCP session of %s ended: %r", server.address, exc)
        finally:
            self.broken = True

    def close(self) -> None:
        self.broken = True
        self._stop.set()
        if not self.opened.done():
            self._task.cancel()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(self._task), 5.0)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    inner = getattr(exc, "exceptions", None)  # duck-typed: BaseExceptionGroup is 3.11+
    while isinstance(inner, (list, tuple)) and inner and isinstance(inner[0], BaseException):
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


def _classify(exc: Exception, what: str) -> Exception:
    """Transient (retry after reconnecting) unless a live server refused the request itself."""
    from mcp import MCPError

    leaf = _leaf(exc)
    if isinstance(leaf, MCPError) and leaf.code in _PERMANENT_CODES:
        return ResourceError(f"{what}: {leaf.message}")
    status = getattr(getattr(leaf, "response", None), "status_code", None)
    if isinstance(status, int) and status in (400, 401, 403, 405):
        return ResourceError(f"{what}: HTTP {status}")
    return TransientError(f"{what}: {type(leaf).__name__}: {leaf}", kind="mcp")


def expand_mcp_servers(resources: dict[str, tuple[ResourceType, Any]],
                       built: dict[str, Any]) -> set[str]:
    """Add every MCP server's tools and prompts to ``resources`` under their own names.

    The servers are built into ``built`` (the plan's cache, so tools and calls share one
    instance); returns the names added, which the plan's JSON leaves out (they are asked again
    when the plan is loaded).
    """
    added: set[str] = set()
    for server_name, (kind, provider) in list(resources.items()):
        if kind is not ResourceType.MCP_SERVER:
            continue
        server = provider.build(lambda n, t: None) if isinstance(provider, ResourceDescriptor) else provider
        if not isinstance(server, MCPServer):
            raise PlanCompileError(f"mcp_server {server_name!r} must be an MCPServer, got {type(server).__name__}")
        built[server_name] = server
        try:
            tools, prompts = server.discover()
        except Exception as exc:  # noqa: BLE001 - any failure to list is a start-up error naming the server
            leaf = _leaf(exc)
            raise PlanCompileError(f"mcp_server {server_name!r} ({server.address}): cannot list its tools and "
                                   f"prompts: {type(leaf).__name__}: {leaf}") from exc
        offered: list[tuple[str, ResourceType, Any]] = [(t.name, ResourceType.TOOL, t) for t in tools]
        offered += [(name, ResourceType.PROMPT, p) for name, p in prompts.items()]
        for name, offered_kind, value in offered:
            if name in resources:
                raise PlanCompileError(f"mcp_server {server_name!r} offers {offered_kind.value} {name!r}, but a "
                                       "resource of that name already exists")
            resources[name] = (offered_kind, value)
            added.add(name)
    return added
