"""OpenAI-compatible chat models (OpenAI, vLLM, Ollama, LiteLLM, llama.cpp server, ...)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
from typing import Any

import openai

from agentplan.chat_message import ChatMessage, MessageRole, ToolCall, trusted_message
from agentplan.chat_models import (
    BaseChatModelConnection,
    BaseChatModelSetup,
    ChatResult,
)
from agentplan.endpoints import ModelEndpoint, model_endpoints, redact_url
from agentplan.exceptions import ChatModelError, ResourceError, TransientError
from agentplan.fastmodel import trusted
from agentplan.integrations._lean_http import (
    LeanAsyncHTTPTransport,
    environment_proxy,
    httpx_module,
)
from agentplan.integrations._prepared_post import PreparedPost, prepare
from agentplan.limits import EndpointLimiter, LimitSettings, endpoint_limits
from agentplan.tools import Tool

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ENV = "OPENAI_MODEL"
#: Which HTTP stack the openai client uses; see OpenAIChatModelConnection._http_client.
HTTP_CLIENT_ENV = "AGENTPLAN_HTTP_CLIENT"
HTTP_CLIENTS = ("lean", "aiohttp", "httpx")


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers if exc.response is not None else {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                return None
    return None


try:
    from aiohttp import ClientConnectionError as _AiohttpConnectionError
except ImportError:  # aiohttp is optional
    _CONNECTION_FAILURES: tuple[type[BaseException], ...] = (ConnectionError,)
else:
    _CONNECTION_FAILURES = (ConnectionError, _AiohttpConnectionError)


def _connection_failure(exc: BaseException) -> BaseException | None:
    """The refused or dropped connection behind a reported timeout, if that is what it was.

    openai's aiohttp transport maps every aiohttp connection error (refused, server
    disconnected) to ``ConnectTimeout``, so the cause chain decides.
    """
    cause = exc.__cause__
    for _ in range(10):  # bounded: chains are short, and must not loop
        if cause is None or isinstance(cause, (TimeoutError, asyncio.TimeoutError)):  # distinct before 3.11
            return None
        if isinstance(cause, _CONNECTION_FAILURES):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _describe_connection_failure(exc: BaseException) -> str:
    """What went wrong on the wire (openai's own message is "Connection error."): the innermost OS
    error of the cause chain (refused, reset, unreachable, DNS), else the transport's exception."""
    direct = exc.__cause__
    innermost: BaseException | None = None
    cause: BaseException | None = direct
    for _ in range(10):  # bounded: chains are short, and must not loop
        if cause is None:
            break
        if isinstance(cause, OSError):
            innermost = cause
        cause = cause.__cause__ or cause.__context__
    found = innermost or direct
    if found is not None and str(found):
        return f"{type(found).__name__}: {found}"
    return str(exc)


#: Refusals that mean the endpoint is misconfigured (wrong URL path, key or model), not the request.
_MISCONFIGURED = (401, 403, 404)


def classify_error(exc: Exception) -> Exception:
    """Map an ``openai`` exception to TransientError (the engine retries) or ChatModelError (give up)."""
    if isinstance(exc, openai.APITimeoutError):
        if _connection_failure(exc) is not None:
            return TransientError(f"cannot reach the model server: {_describe_connection_failure(exc)}",
                                  kind="connection")
        return TransientError("model request timed out", kind="timeout")
    if isinstance(exc, openai.APIConnectionError):
        return TransientError(f"cannot reach the model server: {_describe_connection_failure(exc)}",
                              kind="connection")
    if isinstance(exc, openai.RateLimitError):
        return TransientError(f"rate limited: {exc}", kind="rate_limit", retry_after_s=_retry_after(exc))
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return TransientError(f"model server error {exc.status_code}: {exc}", kind=f"http_{exc.status_code}",
                                  retry_after_s=_retry_after(exc))
        return ChatModelError(f"model request rejected ({exc.status_code}): {exc}")
    if isinstance(exc, openai.APIResponseValidationError):
        return ChatModelError(f"invalid response from the model server: {exc}")
    return exc


def _endpoint_failure(exc: Exception) -> bool:
    """Whether ``exc`` (from the openai client) says the endpoint, not this one request, is failing."""
    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in _MISCONFIGURED
    return False


def to_openai_message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role.value, "content": message.content}
    if message.role is MessageRole.TOOL:
        out["tool_call_id"] = message.extra_args.get("tool_call_id", "")
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in message.tool_calls
        ]
        if not message.content:
            out["content"] = None
    return out


class OpenAIChatModelConnection(BaseChatModelConnection):
    """Connection to an OpenAI-compatible server through the official async client.

    Falls back to ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` when not given. Each call is one HTTP
    request: the SDK's own retries are off and the transport never replays, because transient
    failures are retried by the engine, the one retry layer, up to
    ``AgentConfiguration.transient_retry_limit``. ``max_retries`` is accepted so that Flink Agents
    code ports unchanged, and has no effect: there it is the SDK's retries before the job restarts,
    which the engine's retries stand for here. Every outcome feeds the endpoint's health in
    :data:`agentplan.endpoints.model_endpoints`. ``max_concurrency``, ``initial_concurrency``,
    ``requests_per_minute`` and ``tokens_per_minute`` (any of them) put the endpoint's calls under an
    adaptive limiter (:mod:`agentplan.limits`); the two rates are fleet-wide.
    """

    accepts_limits = True
    provider_name = "openai"  # gen_ai.provider.name of its spans (agentplan.tracing)

    def __init__(self, api_base_url: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int | None = None, organization: str | None = None,
                 default_headers: dict[str, str] | None = None, max_connections: int = 2048,
                 max_concurrency: int | None = None, initial_concurrency: int | None = None,
                 requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 **_ignored: Any) -> None:
        self.limit_settings = LimitSettings.from_arguments(type(self).__name__, {
            "max_concurrency": max_concurrency, "initial_concurrency": initial_concurrency,
            "requests_per_minute": requests_per_minute, "tokens_per_minute": tokens_per_minute})
        self._limited = self.limit_settings.enabled  # read per call: kept out of the hot path
        self._limiter: EndpointLimiter | None = None
        if api_base_url:
            self.base_url_source = f"the api_base_url argument of {type(self).__name__}"
        elif os.environ.get("OPENAI_BASE_URL"):
            self.base_url_source = "OPENAI_BASE_URL"
        else:
            self.base_url_source = "openai's default: neither api_base_url nor OPENAI_BASE_URL is set"
        self.api_base_url = api_base_url or os.environ.get("OPENAI_BASE_URL")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries  # no effect; see the class docstring
        self.organization = organization
        self.default_headers = default_headers
        self.max_connections = max_connections
        self._client: openai.AsyncOpenAI | None = None
        self._chat_post: PreparedPost | None = None  # the fast path of _chat, with the lean transport
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._endpoint: ModelEndpoint | None = None

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatModelConnection(api_base_url={self.api_base_url!r})"

    def client(self) -> openai.AsyncOpenAI:
        """One client per event loop: HTTP pools must not cross loops."""
        loop = asyncio.get_running_loop()
        # Compared by identity, not id(): a new loop may reuse the id of a collected one.
        client = self._client if self._client_loop is loop else None
        if client is None:
            if not self.api_key:
                raise ResourceError("OpenAI connection has no API key: set api_key or OPENAI_API_KEY")
            # max_retries=0: the engine is the one retry layer (jittered backoff, Retry-After, its budget).
            http_client, lean = self._http_client()
            client = openai.AsyncOpenAI(
                base_url=self.api_base_url, api_key=self.api_key, timeout=self.timeout,
                max_retries=0, organization=self.organization,
                default_headers=self.default_headers,
                http_client=http_client,
            )
            self._client, self._client_loop = client, loop
            self._chat_post = prepare(client, lean, "/chat/completions") if lean is not None else None
            if self._endpoint is None:
                self._endpoint = model_endpoints.endpoint(self._effective_base_url(), self.base_url_source)
        return client

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop; call it before that loop ends."""
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            client, self._client, self._client_loop = self._client, None, None
            self._chat_post = None
            await client.close()

    def _http_client(self) -> tuple[Any, LeanAsyncHTTPTransport | None]:
        """The SDK's HTTP client (and its lean transport, if it has one), pooled for thousands of calls
        in flight (the SDK's default is 1000).

        ``AGENTPLAN_HTTP_CLIENT`` picks the stack (README, HTTP client): ``lean`` (default: the
        package-internal asyncio transport, ~1.5x less CPU per call than the next best), ``aiohttp``
        (openai's ``DefaultAioHttpClient``) or ``httpx`` (the SDK's stock client; HTTP/2 with ``h2``).
        ``lean`` hands over to ``aiohttp`` when a proxy variable applies to the model URL; it reads
        CA bundles (``SSL_CERT_FILE``/``SSL_CERT_DIR``) through httpx's TLS context, as the others
        do. None of them retries: the engine does.
        """
        choice = os.environ.get(HTTP_CLIENT_ENV, "lean").strip().lower() or "lean"
        if choice not in HTTP_CLIENTS:
            raise ResourceError(f"{HTTP_CLIENT_ENV}={choice!r}: expected one of {', '.join(HTTP_CLIENTS)}")
        limits = httpx_module.Limits(max_connections=self.max_connections,
                                     max_keepalive_connections=self.max_connections)
        if choice == "lean":
            base_url = self._effective_base_url()
            proxy = environment_proxy(base_url)
            if proxy is None:
                lean = LeanAsyncHTTPTransport(max_connections=self.max_connections)
                return openai.DefaultAsyncHttpxClient(transport=lean, timeout=self.timeout), lean
            logger.info("%s=lean does not speak to proxies: %s goes through openai's aiohttp client and proxy %s",
                        HTTP_CLIENT_ENV, redact_url(base_url), redact_url(proxy))
            choice = "aiohttp"
        if choice == "aiohttp":
            return openai.DefaultAioHttpClient(timeout=self.timeout, limits=limits), None
        return openai.DefaultAsyncHttpxClient(timeout=self.timeout, limits=limits,
                                              http2=importlib.util.find_spec("h2") is not None), None

    def _effective_base_url(self) -> str:
        """The base URL the client will use (the SDK's own default when none is configured)."""
        return self.api_base_url or "https://api.openai.com/v1"

    def is_down(self) -> bool:
        if self._endpoint is None:
            self._endpoint = model_endpoints.endpoint(self._effective_base_url(), self.base_url_source)
        return not self._endpoint.up

    def limiter(self) -> EndpointLimiter | None:
        if self._limiter is None and self._limited:
            self._limiter = endpoint_limits.limiter(self._effective_base_url(), self.limit_settings)
        return self._limiter

    async def chat(self, messages: list[ChatMessage], *, model: str, tools: list[dict[str, Any]] | None = None,
                   **params: Any) -> ChatResult:
        limiter = self.limiter()
        if limiter is None:
            return await self._chat(messages, model=model, tools=tools, **params)
        permit = await limiter.acquire()
        try:
            result = await self._chat(messages, model=model, tools=tools, **params)
        except BaseException as exc:
            permit.finish(exc)
            raise
        permit.finish(None, result.prompt_tokens + result.completion_tokens)
        return result

    async def _chat(self, messages: list[ChatMessage], *, model: str, tools: list[dict[str, Any]] | None = None,
                    **params: Any) -> ChatResult:
        request: dict[str, Any] = {"model": model or os.environ.get(DEFAULT_MODEL_ENV, "gpt-4o-mini"),
                                   "messages": [to_openai_message(m) for m in messages], **params}
        if tools:
            request["tools"] = tools
        try:
            client = self.client()
            prepared = self._chat_post
            if prepared is not None:  # the request head built once by the SDK (_prepared_post)
                body = await prepared.post(request)
            else:
                # client.post (the SDK's documented raw call) rather than chat.completions.create: the
                # request is already wire-format JSON, and create() re-walks it against the SDK's typed
                # parameter schema on every call (~1 ms of CPU per call measured, more than the HTTP).
                # cast_to=Response (the SDK's raw-response cast) skips building a typed ChatCompletion
                # (~0.1 ms per call); parse_chat_completion checks the fields we read instead.
                # Error statuses still raise APIStatusError subclasses before the cast.
                response = await client.post("/chat/completions", body=request, cast_to=httpx_module.Response)
                body = response.content
        except openai.OpenAIError as exc:
            error = classify_error(exc)
            self._report(exc, error)
            raise error from exc
        endpoint = self._endpoint
        if endpoint is not None:
            endpoint.succeeded()
        return parse_chat_completion(body, request["model"])

    def _report(self, exc: Exception, error: Exception) -> None:
        endpoint = self._endpoint
        if endpoint is None:
            return
        if not _endpoint_failure(exc):
            endpoint.succeeded()  # it answered: the request, not the endpoint, is at fault
            return
        message = str(error)
        if self.api_key:  # a server may echo the key in its error body
            message = message.replace(self.api_key, "<api key>")
        endpoint.failed(message[:300])


def _invalid(reason: str, body: bytes) -> ChatModelError:
    excerpt = body[:200].decode("utf-8", errors="replace")
    return ChatModelError(f"invalid response from the model server: {reason}; body starts {excerpt!r}")


def parse_chat_completion(body: bytes, requested_model: str) -> ChatResult:
    """A chat-completions response body as a ChatResult; ChatModelError naming what is wrong."""
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise _invalid(f"body is not JSON ({exc})", body) from None
    if not isinstance(data, dict):
        raise _invalid("body is not a JSON object", body)
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise _invalid("no 'choices' list", body)
    if not choices:
        raise ChatModelError("model returned no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _invalid("choices[0] has no 'message' object", body)
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise _invalid("choices[0].message.content is not a string", body)
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise _invalid("choices[0].message.tool_calls is not a list", body)
    calls = []
    for call in raw_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            continue  # not a function call (the only kind we offer)
        arguments: Any = function.get("arguments") or "{}"
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = {"__unparsed__": function.get("arguments")}
        if not isinstance(arguments, dict):
            arguments = {"value": arguments}
        calls.append(ToolCall(id=str(call.get("id") or ""), name=function["name"], arguments=arguments))
    usage = data.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    model = data.get("model") or requested_model
    if not isinstance(model, str):
        raise _invalid("'model' is not a string", body)
    # Every field is checked above, so the result is built without pydantic validation (~2.5 us of the
    # ~10 us this function cost per call); it is an ordinary ChatResult all the same.
    return trusted(ChatResult, {
        "message": trusted_message(MessageRole.ASSISTANT, content or "", calls),
        "model": model,
        "prompt_tokens": _token_count(usage.get("prompt_tokens")),
        "completion_tokens": _token_count(usage.get("completion_tokens")),
        "fallback": "",
        "finish_reason": str(choice.get("finish_reason") or ""),
    }, set(_RESULT_FIELDS_SET))


# The fields parse_chat_completion gives (fallback is left at its default, as before).
_RESULT_FIELDS_SET = frozenset({"message", "model", "prompt_tokens", "completion_tokens", "finish_reason"})


def _token_count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class OpenAIChatModelSetup(BaseChatModelSetup):
    """Model name, prompt, tools and generation parameters for an OpenAI-compatible connection.

    ``model`` defaults to the ``OPENAI_MODEL`` environment variable. Flink Agents' own arguments mean
    what they mean there: ``strict=True`` asks for strict function calling (each tool's schema is
    marked strict and closed as OpenAI's strict mode requires: no extra properties, all required), and
    ``top_logprobs`` is sent only with ``logprobs=True`` (upstream defaults it to 0, which OpenAI
    refuses without ``logprobs``).
    """

    def __init__(self, connection: str | BaseChatModelConnection, model: str | None = None,
                 prompt: Any = None, tools: list[str] | None = None, temperature: float | None = None,
                 max_tokens: int | None = None, top_p: float | None = None, extract_reasoning: bool = False,
                 additional_kwargs: dict[str, Any] | None = None, strict: bool = False,
                 logprobs: bool | None = None, top_logprobs: int | None = None, **params: Any) -> None:
        if not isinstance(strict, bool):
            raise ResourceError(f"OpenAIChatModelSetup strict must be true or false, got {strict!r}")
        super().__init__(connection, model=model or os.environ.get(DEFAULT_MODEL_ENV), prompt=prompt, tools=tools,
                         extract_reasoning=extract_reasoning, temperature=temperature, max_tokens=max_tokens,
                         top_p=top_p, logprobs=logprobs, top_logprobs=top_logprobs if logprobs else None,
                         **(additional_kwargs or {}), **params)
        self.strict = strict

    def tool_schemas(self, tools: list[Tool]) -> list[dict[str, Any]]:
        schemas = super().tool_schemas(tools)
        return [_strict_schema(s) for s in schemas] if self.strict else schemas


def _strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an OpenAI function tool) marked strict, its parameters closed as strict mode requires."""
    function = dict(schema.get("function") or {})
    parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
    parameters["additionalProperties"] = False
    parameters["required"] = list(parameters.get("properties") or {})
    function.update(parameters=parameters, strict=True)
    return {**schema, "function": function}
