"""The agent's local API for POS developers, on loopback only.

For now it serves ``GET /v1/status`` (what ``posmon-agent status`` prints);
``POST /v1/txn`` arrives with the payments issue.

It runs on the standard library's ``http.server`` in a thread of its own
(requests are few and local; a web framework would cost the agent more
memory than everything else it does). Handlers hand their work to the
agent's event loop and wait for the answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .daemon import Agent

#: How long a request may wait for the event loop before it gets a 503.
LOOP_TIMEOUT_S = 5.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    agent: Agent
    loop: asyncio.AbstractEventLoop


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "posmon-agent"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/v1/status":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {path}; try /v1/status"})
            return
        future = asyncio.run_coroutine_threadsafe(self.server.agent.status_json(), self.server.loop)
        try:
            status = future.result(timeout=LOOP_TIMEOUT_S)
        except Exception as err:  # the loop is busy or stopping: say so, do not hang
            future.cancel()
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"agent busy: {err!r}"})
            return
        self._json(HTTPStatus.OK, status)

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

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
