"""``/openapi.json`` lists every route with its methods, parameters, bodies and responses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.routing import Route, WebSocketRoute

from console.validation import validate
from tests.unit.console_util import console

METHODS = {"get", "post", "patch", "put", "delete"}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def test_every_route_is_documented(tmp_path: Path) -> None:
    with console(tmp_path) as c:
        doc = c.client.get("/openapi.json").json()
        app_routes = c.client.app.routes  # type: ignore[attr-defined]
    assert doc["openapi"] == "3.0.3"
    assert doc["info"]["title"] == "Dispatch hub API"
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    documented |= {(path, "websocket") for path in doc["x-websockets"]}
    # The WebSocket's plain-HTTP answer (426) is part of its x-websockets entry.
    documented.add(("/api/events", "get"))
    served: set[tuple[str, str]] = set()
    for route in app_routes:
        if isinstance(route, WebSocketRoute):
            served.add((route.path, "websocket"))
        elif isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    served.add((route.path, method.lower()))
    assert served == documented
    for path, operations in doc["paths"].items():
        names = re.findall(r"{(\w+)}", path)
        for method, op in operations.items():
            assert method in METHODS
            where = f"{method.upper()} {path}"
            assert op["summary"] and op["operationId"], where
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            assert params == names, where
            assert op["responses"], where
            if op["x-hub-role"] is not None:
                assert {"401", "403"} <= set(op["responses"]), where
                assert op["security"] == [{"bearerAuth": []}, {"cookieAuth": []}], where
                assert f"`{op['x-hub-role']}` role" in op["description"], where
            if names:
                assert "404" in op["responses"], where
            if method in ("post", "patch", "put") and "requestBody" in op:
                assert "422" in op["responses"] and "415" in op["responses"], where
            for status, response in op["responses"].items():
                assert response["description"], (where, status)
                if int(status) >= 400 and path != "/api/health":
                    schema = response["content"]["application/json"]["schema"]
                    assert _resolve(doc, schema)["required"] == ["error_id", "message"]
    operation_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    assert "4401" in doc["x-websockets"]["/api/events"]["description"]


def test_documented_bodies_are_the_ones_enforced(tmp_path: Path) -> None:
    with console(tmp_path) as c:
        doc = c.client.get("/openapi.json").json()
    body = doc["paths"]["/api/directory/people"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert body["required"] == ["name"]
    validate({"name": "A", "endpoints": [{"kind": "sip", "address": "1001"}]}, body)
    import pytest

    from console.errors import ApiError

    with pytest.raises(ApiError, match=r"body.endpoints\[0\]: 'address' is required"):
        validate({"name": "A", "endpoints": [{"kind": "sip"}]}, body)
    login = doc["paths"]["/api/auth/login"]["post"]["requestBody"]["content"]
    assert set(login) == {"application/json", "application/x-www-form-urlencoded"}
    csv = doc["paths"]["/api/directory/import"]["post"]["requestBody"]["content"]
    assert set(csv) == {"text/csv", "text/plain"}
    audit = doc["paths"]["/api/audit"]["get"]
    assert {p["name"] for p in audit["parameters"]} == {
        "operator", "action", "target", "result", "since", "until", "before", "limit"}
    assert audit["x-hub-role"] == "supervisor"
    assert doc["paths"]["/api/operators"]["post"]["x-hub-audit-action"] == "operator.create"
