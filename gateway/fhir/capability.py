"""The CapabilityStatement, read off the FHIR router's own routes, so it cannot say more
or less than what is served: each `POST /fhir/R4/{Type}` is a `create`, each
`GET /fhir/R4/{Type}/{id}` a `read`; a create that takes `If-None-Exist` is conditional."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi.routing import APIRoute
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from gateway.fhir.systems import BASE_PATH, FHIR_VERSION, MEDIA_TYPE

RELEASED = "2026-12-06"  # when this face's capabilities last changed
SECURITY = ("Every resource interaction needs `Authorization: Bearer <API key>` of a pharmacy "
            "key, as the REST API: same roles, rate limits, audit and idempotency.")


def interactions(routes: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Resource type -> its interactions and whether a create is conditional."""
    found: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, APIRoute) or not route.path.startswith(f"{BASE_PATH}/"):
            continue
        methods = route.methods or set()
        parts = route.path.removeprefix(f"{BASE_PATH}/").split("/")
        if parts == ["metadata"]:
            continue
        kind = parts[0]
        entry = found.setdefault(kind, {"interaction": []})
        if len(parts) == 1 and "POST" in methods:
            entry["interaction"].append({"code": "create", "documentation": route.summary})
            headers = {param.alias for param in route.dependant.header_params}
            entry["conditionalCreate"] = "If-None-Exist" in headers
        elif parts[1:] == ["{id}"] and "GET" in methods:
            entry["interaction"].append({"code": "read", "documentation": route.summary})
        else:
            raise ValueError(f"{route.path}: not a FHIR interaction this statement knows")
    return found


def capability_statement(routes: Iterable[Any], public_url: str,
                         version: str) -> CapabilityStatement:
    resources = [{"type": kind, **entry}
                 for kind, entry in sorted(interactions(routes).items())]
    return CapabilityStatement.model_validate({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": RELEASED,
        "kind": "instance",
        "software": {"name": "Tiers-payant fallback claims gateway", "version": version},
        "implementation": {"description": "FHIR R4 face of the tiers-payant gateway",
                           "url": f"{public_url.rstrip('/')}{BASE_PATH}"},
        "fhirVersion": FHIR_VERSION,
        "format": [MEDIA_TYPE, "json"],
        "rest": [{"mode": "server", "security": {"description": SECURITY},
                  "resource": resources}],
    })
