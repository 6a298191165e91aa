"""The agent's local API for POS developers, on loopback only.

For now it serves ``GET /v1/status`` (what ``posmon-agent status`` prints);
``POST /v1/txn`` arrives with the payments issue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .daemon import Agent

AGENT_KEY: web.AppKey[Agent] = web.AppKey("agent")


async def _status(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    return web.json_response(await agent.status_json())


def create_api(agent: Agent) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[AGENT_KEY] = agent
    app.router.add_get("/v1/status", _status)
    return app


async def start_api(agent: Agent) -> tuple[web.AppRunner, str]:
    """Bind the API (port 0 picks a free port); returns the runner and its URL."""
    runner = web.AppRunner(create_api(agent), access_log=None, handle_signals=False)
    await runner.setup()
    api = agent.settings.api
    site = web.TCPSite(runner, api.host, api.port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    host = f"[{host}]" if ":" in host else host
    return runner, f"http://{host}:{port}"
