"""Reading a FHIR resource from a request body: JSON, the expected `resourceType`, then
the model library's validation, every fault named by the FHIRPath of its element."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from gateway.errors import GatewayError
from gateway.fhir.systems import MEDIA_TYPE

R = TypeVar("R", bound=Resource)
ACCEPTED_TYPES = (MEDIA_TYPE, "application/json")
ISSUE_CODES = {"extra_forbidden": "structure", "missing": "required"}
# fhir.resources names a few elements differently from FHIR (`class` is a Python keyword)
PYTHON_NAMES = {"class_fhir": "class", "import_fhir": "import"}


class BadResource(GatewayError):
    """FHIR's 400: the body is not a resource of the expected type (unknown elements too)."""

    status, type, title = 400, "invalid-resource", "The body is not a valid FHIR resource"


class ModifierNotUnderstood(GatewayError):
    status, type, title = 422, "modifier-not-understood", "A modifier extension is not understood"


class UnsupportedMediaType(GatewayError):
    status, type, title = 415, "unsupported-media-type", "Send application/fhir+json"


def fhir_path(root: str, loc: tuple[int | str, ...] | list[int | str]) -> str:
    """('item', 0, 'foo') under Claim -> 'Claim.item[0].foo'."""
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{PYTHON_NAMES.get(part, part)}"
    return path


def _message(error: Any) -> str:
    """Pydantic's message, never with the submitted value in it (it may be a NIR)."""
    if error["type"] == "extra_forbidden":
        return "unknown element"
    if error["type"] == "missing" or "is required" in str(error.get("msg", "")):
        return "required"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str | int | float) and str(value) and str(value) in message:
        message = message.replace(str(value), "…")
    return message


def model_errors(root: str, exc: ValidationError) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for error in exc.errors():
        code = "required" if _message(error) == "required" else ISSUE_CODES.get(
            error["type"], "value")
        item = {"field": fhir_path(root, error["loc"]), "message": _message(error),
                "code": code}
        if item not in found:
            found.append(item)
    return found


async def read_resource(request: Request, model: type[R]) -> R:
    """The request's body as `model`, or a 400/415 naming what is wrong; never a 5xx."""
    return parse_resource(await request.body(), request.headers.get("content-type", ""), model)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_resource(body: bytes, content_type: str, model: type[R]) -> R:
    root = model.__name__
    media = content_type.split(";")[0].strip().lower()
    if media not in ACCEPTED_TYPES:
        raise UnsupportedMediaType(f"send the {root} as {MEDIA_TYPE} (or application/json)")
    try:
        # decimals kept exact (a float would round 8.0000000000000000001 to 8), and no
        # NaN or Infinity, which JSON does not have
        data = json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested
        raise BadResource("the body is not JSON", errors=[  # deeper than Python reads
            {"field": root, "message": "malformed JSON", "code": "structure"}]) from None
    if not isinstance(data, dict) or data.get("resourceType") != root:
        raise BadResource(f"the body must be a {root} resource", errors=[
            {"field": root, "message": f"resourceType must be {root}", "code": "structure"}])
    try:
        resource = model.model_validate(data)
    except ValidationError as exc:
        errors = model_errors(root, exc)
        raise BadResource(f"invalid elements: {', '.join(e['field'] for e in errors)}",
                          errors=errors) from None
    except (TypeError, ValueError, LookupError) as exc:  # a model validator's own refusal
        raise BadResource(f"the {root} could not be read: {type(exc).__name__}", errors=[
            {"field": root, "message": "not a valid resource", "code": "structure"}]) from None
    if modifiers := sorted(modifier_extensions(data, root)):
        raise ModifierNotUnderstood("modifier extensions are not understood", errors=[
            {"field": path, "message": "a modifier extension this gateway does not understand",
             "code": "not-supported"} for path in modifiers])
    return resource


def modifier_extensions(node: Any, path: str) -> list[str]:
    """Where the body has a `modifierExtension`: FHIR says a system that does not understand
    one must refuse the resource, not ignore it (this gateway understands none)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            found += [where] if key == "modifierExtension" else modifier_extensions(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += modifier_extensions(value, f"{path}[{index}]")
    return found
