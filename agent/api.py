"""The agent's local API for POS developers, on loopback only.

- ``POST /v1/txn``: a payment's start, its end, or both (:mod:`agent.payments`).
  202 once the report is durable in the spool; 400 naming the field for bad
  input, 411 without a Content-Length, 413 for a body over 64 KiB, 422 for a
  field that would carry card data, 409 for a conflict, 503 when the spool
  cannot store it. Nothing is stored when the answer is not 202.
- ``POST /v1/txn/resolution``: ``{txn_id, resolution}`` clears a payment in
  doubt; 404 for an unknown ``txn_id``, 409 when it is not in doubt.
- ``GET /v1/status``: what ``posmon-agent status`` prints.

Answers are JSON: ``{"result": "started"}`` or ``{"error": "...", "field": "..."}``.

It runs on the standard library's ``http.server`` in a thread per connection
(a web framework would cost the agent more memory than everything else it
does). Handlers hand their work to the agent's event loop and wait for the
answer. Each answer is one write with ``TCP_NODELAY``: a kept-alive client
then never waits for a delayed ACK.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final

import orjson

from .pan_guard import GUARD
from .payments import PaymentError

if TYPE_CHECKING:
    from .daemon import Agent

#: How long a request may wait for the event loop before it gets a 503.
LOOP_TIMEOUT_S: Final = 5.0
#: The largest request body taken (a payment report is a few hundred bytes).
MAX_BODY: Final = 64 * 1024
#: A connection silent for this long is closed.
IDLE_TIMEOUT_S: Final = 30.0

_POSTS: Final = ("/v1/txn", "/v1/txn/resolution")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The standard library's 5 makes the kernel drop or reset connections when
    # several tills (or threads of one POS app) connect at the same moment.
    request_queue_size = 128
    agent: Agent
    loop: asyncio.AbstractEventLoop


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "posmon-agent"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in _POSTS:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, None, f"{path} takes POST")
            return
        if path != "/v1/status":
            self._error(HTTPStatus.NOT_FOUND, None, f"no such path {path}; try /v1/status")
            return
        status = self._on_loop(self.server.agent.status_json())
        if status is not None:
            self._reply(HTTPStatus.OK, status)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._body()
        if body is None:
            return
        if path not in _POSTS:
            allowed = "GET" if path == "/v1/status" else None
            if allowed:
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, None, f"{path} takes GET")
            else:
                self._error(HTTPStatus.NOT_FOUND, None, f"no such path {path}; try /v1/txn")
            return
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._error(HTTPStatus.BAD_REQUEST, None, "the body is not valid JSON (UTF-8)")
            return
        if not isinstance(data, dict):
            self._error(HTTPStatus.BAD_REQUEST, None, "the body must be a JSON object")
            return
        payments = self.server.agent.payments
        if path == "/v1/txn":
            work = payments.submit(data, source="api")
        else:
            work = payments.resolve_request(data, source="api")
        result = self._on_loop(work)
        if result is not None:
            self._reply(HTTPStatus.ACCEPTED, {"result": result})

    # -- helpers ----------------------------------------------------------

    def _body(self) -> bytes | None:
        """The request body, or None after answering with an error (and closing)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._error(
                HTTPStatus.LENGTH_REQUIRED, None, "send a Content-Length, not chunks", close=True
            )
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.command == "POST":
                self._error(
                    HTTPStatus.LENGTH_REQUIRED, None, "Content-Length is required", close=True
                )
                return None
            return b""
        if not (raw.isascii() and raw.strip().isdigit()):
            self._error(HTTPStatus.BAD_REQUEST, None, "Content-Length is not a number", close=True)
            return None
        length = int(raw)
        if length > MAX_BODY:
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                None,
                f"the body is {length} bytes; the limit is {MAX_BODY} (64 KiB)",
                close=True,
            )
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def _on_loop(self, work: Coroutine[Any, Any, Any]) -> Any:
        """Run ``work`` on the agent's loop and return its result; answer errors."""
        future = asyncio.run_coroutine_threadsafe(work, self.server.loop)
        try:
            return future.result(timeout=LOOP_TIMEOUT_S)
        except PaymentError as err:
            self._error(HTTPStatus(err.status), err.field, err.reason)
        except TimeoutError:  # the loop is busy or stopping: say so, do not hang
            future.cancel()
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, None, "agent busy; try again")
        except Exception as err:  # a bug: answer it rather than drop the connection
            text = GUARD.scrub(f"internal error: {type(err).__name__}: {err}")[0]
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, None, text[:512])
        return None

    def _error(
        self, status: HTTPStatus, field: str | None, reason: str, *, close: bool = False
    ) -> None:
        message = f"{field}: {reason}" if field else reason
        self._reply(status, {"error": message, "field": field}, close=close)

    def _reply(self, status: HTTPStatus, body: dict[str, Any], *, close: bool = False) -> None:
        data = orjson.dumps(body)
        if close:
            self.close_connection = True
        head = (
            f"{self.protocol_version} {status.value} {status.phrase}\r\n"
            f"Server: {self.server_version}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            + ("Connection: close\r\n" if self.close_connection else "")
            + "\r\n"
        )
        self.wfile.write(head.encode("ascii") + data)

    def log_message(self, format: str, *args: Any) -> None:
        """No line per request: the agent logs changes of state only."""


class ApiServer:
    """The bound server and its thread; :meth:`stop` shuts both down."""

    def __init__(self, agent: Agent, loop: asyncio.AbstractEventLoop) -> None:
        host, port = agent.settings.api.host, agent.settings.api.port
        server_cls = type(
            "_BoundServer",
            (_Server,),
            {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET},
        )
        self.server: _Server = server_cls((host, port), _Handler)
        self.server.agent = agent
        self.server.loop = loop
        bound_host, bound_port = self.server.server_address[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self.url = f"http://{shown}:{bound_port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="local-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
