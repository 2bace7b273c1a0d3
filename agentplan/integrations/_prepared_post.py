"""A POST to one endpoint of an ``openai`` client, its request head built once by the SDK. Package-internal.

Why: ``AsyncOpenAI.post`` rebuilds the same request on every call (pydantic option models and their
deep copies, header merging and validation, URL parsing, httpx request and response objects): ~0.4 ms
of CPU per call measured at 1,024 calls in flight, more than the rest of an agent's work per record
against a fast model server. The head is the same for every call of a connection, so it is built
once, by the SDK's own ``_build_request`` (the same URL, auth, ``User-Agent``, ``X-Stainless-*``,
``Accept-Encoding`` and custom headers the SDK sends), and each call then only encodes its body and
writes one buffer through the lean transport's pool (:mod:`._lean_http`).

What the SDK does around the wire is kept: the body is encoded by the SDK's JSON encoder, error
statuses become the SDK's own exceptions (``_make_status_error_from_response``), transport
failures become ``APITimeoutError``/``APIConnectionError`` chained to the cause, as in
``AsyncAPIClient.request``. A redirect is handed to the SDK's path, which follows it. The SDK's
retries are off on this connection in either path (the engine is the one retry layer), so a call
is one request. Not kept: the httpx cookie jar (the chat API is stateless); per-request auth hooks,
so :func:`prepare` returns None for a client that has them (key providers, workload identity) and
the connection calls ``post`` instead.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import openai
from openai._models import FinalRequestOptions

from agentplan.integrations._lean_http import LeanAsyncHTTPTransport, WholeResponse, httpx_module

try:
    from openai._utils._json import openapi_dumps  # the SDK's request-body encoder (recent releases)
except ImportError:  # releases without it encode bodies through httpx's json=, with these settings
    def openapi_dumps(obj: Any) -> bytes:  # type: ignore[misc,unused-ignore]
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

logger = logging.getLogger(__name__)

# Not part of the shared head: set per request.
_PER_REQUEST_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


class PreparedPost:
    """JSON POSTs to ``path`` of ``client``, through ``transport`` (the client's own transport)."""

    def __init__(self, client: openai.AsyncOpenAI, transport: LeanAsyncHTTPTransport, path: str) -> None:
        self._client = client
        self._path = path
        self._transport = transport
        # The SDK's own request for this path, built as AsyncAPIClient.post builds it (first attempt).
        template = client._build_request(FinalRequestOptions.construct(method="post", url=path, json_data={}))
        self._url = template.url
        self._timeouts: dict[str, float | None] = template.extensions.get("timeout") or {}
        self._headers = [(name, value) for name, value in template.headers.raw
                         if name.lower() not in _PER_REQUEST_HEADERS]
        connection = b", ".join(value for name, value in self._headers if name.lower() == b"connection")
        self._keep_alive = b"close" not in connection.lower()
        fields = b"".join(b"%s: %s\r\n" % pair for pair in self._headers)
        # Everything before the body but its length: one bytes formatting per call.
        self._head = b"POST %s HTTP/1.1\r\n%sContent-Length: " % (self._url.raw_path, fields)

    async def post(self, body: Any) -> bytes:
        """POST ``body`` (JSON-encodable) and return the 2xx response body, decoded.

        Raises what ``client.post`` raises: ``APIStatusError`` subclasses for error statuses,
        ``APITimeoutError`` and ``APIConnectionError`` (chained to the transport's exception).
        """
        content = openapi_dumps(body)
        payload = b"%s%d\r\n\r\n%s" % (self._head, len(content), content)
        try:
            response = await self._transport.send_encoded(self._url, payload, self._keep_alive, self._timeouts)
        except httpx_module.TimeoutException as exc:
            raise openai.APITimeoutError(request=self._request(content)) from exc
        except httpx_module.RequestError as exc:
            raise openai.APIConnectionError(request=self._request(content)) from exc
        status = response.status
        if 200 <= status < 300 and not response.content_encoded:
            return response.body
        if 300 <= status < 400:  # the SDK's path follows redirects as its httpx client is set to
            redirected: Any = await self._client.post(self._path, body=body, cast_to=httpx_module.Response)
            return bytes(redirected.content)
        full = self._response(response, content)
        if status >= 400:
            raise self._client._make_status_error_from_response(full) from None
        return bytes(full.content)

    def _request(self, content: bytes) -> Any:
        """The request as httpx sees it, for the exceptions that carry one (failures only)."""
        return httpx_module.Request("POST", self._url, headers=self._headers, content=content)

    def _response(self, response: WholeResponse, content: bytes) -> Any:
        full = httpx_module.Response(status_code=response.status, headers=response.headers,
                                     stream=httpx_module.ByteStream(response.body),
                                     extensions=response.extensions, request=self._request(content))
        full.read()  # decodes any Content-Encoding
        return full


def prepare(client: openai.AsyncOpenAI, transport: LeanAsyncHTTPTransport, path: str) -> PreparedPost | None:
    """A PreparedPost for ``client``, or None when its requests need per-request work (auth hooks)."""
    if client.custom_auth is not None or any(getattr(client, name, None) is not None for name in (
            "_provider_runtime", "_api_key_provider", "_workload_identity_auth")):
        return None
    try:
        return PreparedPost(client, transport, path)
    except (AttributeError, TypeError) as exc:  # another SDK release's internals: the documented path
        logger.warning("openai %s: cannot prepare %s requests (%s); calls go through client.post",
                       openai.__version__, path, exc)
        return None
