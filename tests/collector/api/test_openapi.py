"""The OpenAPI document: valid, in step with the app's routes, and true of the running API.

schemathesis generates requests from the document and sends them to a real
collector holding the viewdata fleet, with a viewer token; no answer may be
a 5xx, and every answer must match the document (status, content type, body).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from collector.api.wiring import served_paths
from collector.app import create_app
from collector.settings import CollectorSettings
from collector.storage.sqlite import SqliteStorage
from tests.collector.viewdata import Fleet
from tests.collector.wire import request

METHODS = ("get", "post", "put", "patch", "delete")


def _document(fleet: Fleet) -> dict[str, Any]:
    reply = request(fleet.url, "/api/v1/openapi.json")
    assert reply.status == 200
    doc: dict[str, Any] = reply.json()
    return doc


def test_the_document_is_valid_openapi(fleet: Fleet) -> None:
    doc = _document(fleet)
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_route_is_documented_and_nothing_else(fleet: Fleet, tmp_path: Path) -> None:
    app = create_app(
        CollectorSettings(db=str(tmp_path / "c.db")), SqliteStorage(str(tmp_path / "c.db"))
    )
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    doc = _document(fleet)
    documented = {
        (method, path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }
    assert routes == documented
    assert "/metrics" in served_paths(app) or ("get", "/metrics") not in documented


def test_read_endpoints_declare_bearer_auth_and_their_errors(fleet: Fleet) -> None:
    doc = _document(fleet)
    for path, item in doc["paths"].items():
        if not path.startswith("/api/v1/") or path.endswith("openapi.json"):
            continue
        for method, op in item.items():
            assert op["security"] == [{"bearer": []}], (method, path)
            assert {"401", "403", "503"} <= set(op["responses"]), (method, path)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_generated_requests_find_no_server_error(fleet: Fleet) -> None:
    """Every GET operation, 40 generated requests each (schemathesis' pytest plugin does
    not run on this pytest, so the cases are drawn with hypothesis directly)."""
    schema = schemathesis.openapi.from_url(f"{fleet.url}/api/v1/openapi.json")
    headers = {"Authorization": f"Bearer {fleet.viewer}"}
    tried = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "GET":
            continue
        tried.append(operation.path)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(base_url=fleet.url, headers=headers, checks=CHECKS)

        check()
    assert "/api/v1/terminals/{terminal_id}/timeline" in tried
    assert len(tried) >= 9
