"""HTTP endpoint for Prometheus scraping and Kubernetes-style probes.

Serves ``/metrics``, ``/healthz`` (liveness) and ``/readyz`` (readiness) from a
daemon thread so probes keep answering even while the processing loop is busy.
Responses only ever contain the metrics exposition and the health detail the
caller supplies -- never record payloads.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from agentplan.endpoints import EndpointRegistry

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 5.0
_POLL_INTERVAL_S = 0.1  # how quickly serve_forever notices shutdown()


class _QuietThreadingHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that logs client errors at debug instead of printing tracebacks."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("observability request from %s failed", client_address, exc_info=True)


class ObservabilityServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` for one registry.

    ``liveness()`` returning False (or raising) makes ``/healthz`` answer 503;
    ``readiness()`` returns ``(ready, detail)`` and ``/readyz`` answers
    ``{"ready": ready, **detail}`` with 200 or 503.  ``port=0`` binds a free
    port, available from :attr:`port` after :meth:`start`.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str = "0.0.0.0",
        port: int = 9400,
        liveness: Callable[[], bool] = lambda: True,
        readiness: Callable[[], tuple[bool, dict]] = lambda: (True, {}),
    ) -> None:
        self._registry = registry
        self._host = host
        self._requested_port = port
        self._liveness = liveness
        self._readiness = readiness
        self._server: _QuietThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------ properties

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port once started (resolves ``port=0``), else the requested one."""
        server = self._server
        if server is not None:
            return int(server.server_address[1])
        return self._requested_port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------- lifecycle

    def start(self) -> ObservabilityServer:
        """Bind and serve in a daemon thread; idempotent. Returns self."""
        with self._lock:
            if self._server is not None:
                return self
            server = _QuietThreadingHTTPServer((self._host, self._requested_port), self._make_handler())
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name=f"agentfleet-observability-{server.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
        logger.info("observability server listening on %s:%d", self._host, self.port)
        return self

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """Stop serving and release the port; bounded by ``timeout_s``. Idempotent."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server, self._thread = None, None
        if server is None:
            return
        try:
            # shutdown() blocks until serve_forever exits; the thread is running
            # serve_forever here, so this returns within ~poll_interval.
            if thread is not None and thread.is_alive():
                server.shutdown()
        finally:
            server.server_close()
            if thread is not None:
                thread.join(timeout_s)
                if thread.is_alive():
                    logger.warning("observability server thread did not stop within %.1fs", timeout_s)
        logger.info("observability server stopped")

    def __enter__(self) -> ObservabilityServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- handlers

    def _check_liveness(self) -> bool:
        try:
            return bool(self._liveness())
        except Exception:
            logger.warning("liveness check raised", exc_info=True)
            return False

    def _check_readiness(self) -> tuple[bool, dict[str, Any]]:
        try:
            ready, detail = self._readiness()
            return bool(ready), dict(detail or {})
        except Exception as exc:
            logger.warning("readiness check raised", exc_info=True)
            # Only the exception type: its message could quote payload data.
            return False, {"error": type(exc).__name__}

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "agentfleet-observability"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                logger.debug("%s - " + format, self.address_string(), *args)

            def _send(self, status: int, content_type: str, body: bytes, head: bool) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _dispatch(self, head: bool) -> None:
                path = urlsplit(self.path).path
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(outer._registry), head)
                elif path == "/healthz":
                    if outer._check_liveness():
                        self._send(200, "text/plain; charset=utf-8", b"ok", head)
                    else:
                        self._send(503, "text/plain; charset=utf-8", b"not alive", head)
                elif path == "/readyz":
                    ready, detail = outer._check_readiness()
                    doc: dict[str, Any] = {"ready": ready}
                    doc.update((k, v) for k, v in detail.items() if k != "ready")
                    body = json.dumps(doc, default=str).encode()
                    self._send(200 if ready else 503, "application/json", body, head)
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found", head)

            def do_GET(self) -> None:  # noqa: N802
                self._dispatch(head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._dispatch(head=True)

        return Handler


def model_endpoints_readiness(endpoints: EndpointRegistry) -> tuple[bool, dict[str, Any]]:
    """``(ready, detail)`` for ``/readyz`` from agentplan's model endpoints: not ready while one fails.

    Only readiness: a worker whose model is down is alive (a restart would not bring the model back,
    and its runs resume by themselves), so ``/healthz`` must not use this. The detail names each
    endpoint by its redacted URL and the setting it came from; it never holds the API key.
    """
    statuses = endpoints.statuses()
    detail = [{"url": s.url, "source": s.source, "up": s.up,
               "since": datetime.fromtimestamp(s.since, timezone.utc).isoformat(timespec="seconds"),
               "failures": s.failures, "last_error": s.last_error} for s in statuses]
    return all(s.up for s in statuses), {"model_endpoints": detail}
