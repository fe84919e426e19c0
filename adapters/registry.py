"""Insurer number -> operator, and adapter slug -> adapter factory; both checked at start.

Routing (docs/configuration.md, `[[operators]]`): an exact insurer number beats a prefix
(`80*`), a longer prefix beats a shorter one, and a pattern claimed by two
operators is a configuration error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import httpx

from adapters import reference
from adapters.base import OperatorAdapter

AdapterFactory = Callable[[str, httpx.AsyncClient, float], OperatorAdapter]

ADAPTERS: dict[str, AdapterFactory] = {"reference": reference.build}


class RoutingError(ValueError):
    """The routing table is ambiguous or malformed."""


class InsurerRouter:
    def __init__(self, patterns_by_operator: Mapping[str, Iterable[str]]) -> None:
        self._exact: dict[str, str] = {}
        self._prefixes: list[tuple[str, str]] = []
        owner: dict[str, str] = {}
        for operator, patterns in patterns_by_operator.items():
            for pattern in patterns:
                if pattern in owner:
                    raise RoutingError(
                        f"insurer pattern {pattern!r} is routed to both "
                        f"{owner[pattern]!r} and {operator!r}"
                    )
                owner[pattern] = operator
                if pattern.endswith("*"):
                    self._prefixes.append((pattern[:-1], operator))
                else:
                    self._exact[pattern] = operator
        self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)

    def route(self, insurer_number: str) -> str | None:
        """The operator for this insurer number, or None when no pattern matches."""
        if insurer_number in self._exact:
            return self._exact[insurer_number]
        for prefix, operator in self._prefixes:
            if insurer_number.startswith(prefix):
                return operator
        return None


def adapter_factory(slug: str) -> AdapterFactory:
    try:
        return ADAPTERS[slug]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise RoutingError(f"unknown adapter {slug!r} (known: {known})") from None
