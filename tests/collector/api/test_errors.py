"""Who may read, and what a wrong parameter gets: 400 naming it, 401, 403, 404."""

from __future__ import annotations

import pytest

import protocol
from tests.collector.api.conftest import get
from tests.collector.viewdata import Fleet
from tests.collector.wire import make_report, post_report, request

READS = (
    "fleet",
    "terminals",
    "terminals/T-OK",
    "terminals/T-OK/timeline",
    "transactions",
    "incidents",
    "incidents/1",
)


@pytest.mark.parametrize("path", READS)
def test_an_agent_token_cannot_read(fleet: Fleet, path: str) -> None:
    reply = get(fleet.url, fleet.agent, path)
    assert reply.status == 403
    assert "token create --db PATH --viewer NAME" in reply.json()["error"]


@pytest.mark.parametrize("path", READS)
def test_no_token_or_an_unknown_one_is_401(fleet: Fleet, path: str) -> None:
    for token in (None, "not-a-token"):
        reply = get(fleet.url, token, path)
        assert reply.status == 401, (path, token)
        assert reply.headers["WWW-Authenticate"] == "Bearer"


def test_a_viewer_token_cannot_ingest(fleet: Fleet) -> None:
    report = make_report([1], terminal_id="T-OK", store_id="S-1", agent_id="agent-T-OK")
    reply = post_report(fleet.url, protocol.encode_report(report), fleet.viewer)
    assert reply.status == 403
    assert "viewer" in reply.json()["error"]


def test_the_openapi_document_needs_no_token(fleet: Fleet) -> None:
    reply = request(fleet.url, "/api/v1/openapi.json")
    assert reply.status == 200
    assert reply.json()["openapi"].startswith("3.")


BAD = [
    ("terminals", {"limit": "0"}, "limit"),
    ("terminals", {"limit": "1001"}, "limit"),
    ("terminals", {"limit": "ten"}, "limit"),
    ("terminals", {"limit": "-5"}, "limit"),
    ("terminals", {"state": "broken"}, "state"),
    ("terminals", {"store": ""}, "store"),
    ("terminals", {"store": "S" * 129}, "store"),
    ("terminals", {"cursor": "garbage!"}, "cursor"),
    ("terminals", {"cursor": "WyJ0ZXJtaW5hbHMiLDFd"}, "cursor"),  # ["terminals",1]: wrong type
    ("terminals", {"sort": "state"}, "sort"),
    ("fleet", {"stores": "0"}, "stores"),
    ("fleet", {"verbose": "1"}, "verbose"),
    ("terminals/T-OK", {"since": "2026-01-01T00:00:00Z"}, "since"),
    ("terminals/T-OK/timeline", {"kind": "txn,bogus"}, "kind"),
    ("terminals/T-OK/timeline", {"since": "yesterday"}, "since"),
    ("terminals/T-OK/timeline", {"until": "2026-03-01T12:00:00"}, "until"),  # no zone
    (
        "terminals/T-OK/timeline",
        {"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"},
        "until",
    ),
    ("transactions", {"outcome": "refused"}, "outcome"),
    ("transactions", {"cause": "gremlins"}, "cause"),
    ("transactions", {"in_doubt": "yes"}, "in_doubt"),
    ("transactions", {"failed": "1"}, "failed"),
    ("transactions", {"since": "2026-13-01T00:00:00Z"}, "since"),
    ("transactions", {"terminal": "T" * 200}, "terminal"),
    ("transactions", {"txn": "tx-1"}, "txn"),
    ("incidents", {"state": "resolved"}, "state"),
    ("incidents", {"kind": "network"}, "kind"),
    ("incidents", {"cause": "weather"}, "cause"),
    ("incidents/abc", {}, "incident_id"),
]


@pytest.mark.parametrize(("path", "params", "field"), BAD)
def test_a_bad_parameter_is_400_naming_it(
    fleet: Fleet, path: str, params: dict[str, str], field: str
) -> None:
    reply = get(fleet.url, fleet.viewer, path, **params)
    assert reply.status == 400, reply.body
    body = reply.json()
    assert body["field"] == field
    assert body["error"].startswith(f"{field}: ")


def test_a_parameter_given_twice_is_400(fleet: Fleet) -> None:
    reply = request(fleet.url, "/api/v1/transactions?limit=1&limit=2", token=fleet.viewer)
    assert reply.status == 400
    assert reply.json() == {"error": "limit: given more than once", "field": "limit"}


def test_times_with_an_offset_are_accepted(fleet: Fleet) -> None:
    for since in ("2026-03-01T13:00:00+01:00", "2026-03-01T12:00:00.5Z"):
        reply = get(fleet.url, fleet.viewer, "transactions", since=since)
        assert reply.status == 200, (since, reply.body)
    # an unencoded '+' arrives as a space; still read as the offset it was meant to be
    raw = request(
        fleet.url, "/api/v1/transactions?since=2026-03-01T13:00:00+01:00", token=fleet.viewer
    )
    assert raw.status == 200, raw.body
