"""The operators the gateway talks to, built once from settings in the lifespan."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import httpx

from adapters.base import OperatorAdapter
from adapters.registry import InsurerRouter, RoutingError, adapter_factory
from adapters.transport import AiohttpTransport, OperatorClient
from gateway.resilience.breaker import OperatorBreaker
from gateway.resilience.guard import Guard
from gateway.settings import ConfigError, OperatorSettings, Settings

OPERATOR_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


@dataclass(slots=True)
class Operator:
    """An operator's settings, adapter, breaker and the guard every call goes through."""

    settings: OperatorSettings
    adapter: OperatorAdapter
    breaker: OperatorBreaker
    guard: Guard

    @property
    def name(self) -> str:
        return self.settings.name


class OperatorDirectory:
    """Routes insurer numbers and holds each operator's adapter and HTTP client."""

    def __init__(
        self,
        operators: Mapping[str, Operator],
        router: InsurerRouter,
        clients: list[httpx.AsyncClient] | None = None,
    ) -> None:
        self._operators = dict(operators)
        self._router = router
        self._clients = clients or []

    def route(self, insurer_number: str) -> Operator | None:
        name = self._router.route(insurer_number)
        return self._operators.get(name) if name else None

    def get(self, name: str) -> Operator | None:
        return self._operators.get(name)

    def __iter__(self) -> Iterator[Operator]:
        return iter(self._operators.values())

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def build_directory(
    settings: Settings,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> OperatorDirectory:
    """One HTTP client and adapter per operator; `transports` lets tests plug an ASGI app."""
    transports = transports or {}
    try:
        router = InsurerRouter({op.name: op.insurers for op in settings.operators})
    except RoutingError as exc:
        raise ConfigError(f"operators.insurers: {exc}") from exc
    operators: dict[str, Operator] = {}
    clients: list[httpx.AsyncClient] = []
    for index, op in enumerate(settings.operators):
        try:
            factory = adapter_factory(op.adapter)
        except RoutingError as exc:
            raise ConfigError(f"operators[{index}].adapter: {exc}") from exc
        client = OperatorClient(
            base_url=op.base_url,
            transport=transports.get(op.name) or AiohttpTransport(OPERATOR_LIMITS),
            timeout=httpx.Timeout(op.timeout_s),
        )
        clients.append(client)
        breaker = OperatorBreaker(op.name, fail_max=op.breaker_fail_max,
                                  reset_s=op.breaker_reset_s, reset_max_s=op.breaker_reset_max_s)
        operators[op.name] = Operator(
            settings=op,
            adapter=factory(op.name, client, op.timeout_s),
            breaker=breaker,
            guard=Guard(breaker, timeout_s=op.timeout_s, deadline_s=op.deadline_s),
        )
    return OperatorDirectory(operators, router, clients)
