"""The bus interface: RPC `call`/`cast` to named topics.

Backends (in-process `memory`, and RabbitMQ later) implement `Bus`. Callers
name a method from `ferry.bus.catalogue`; arguments and results must be JSON
values. A handler's exception comes back to the caller as `RemoteError` with
the exception's class name and message, never as a pickled object.
"""

from __future__ import annotations

import abc
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ferry.bus.catalogue import CATALOGUE

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class BusError(Exception):
    pass


class RemoteError(BusError):
    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message


class BusTimeout(BusError):
    pass


class BadMessage(BusError):
    """A message that can never succeed (unknown method, arguments that do not
    fit its signature): brokers dead-letter it instead of redelivering it."""


class UnknownMethod(BadMessage):
    pass


def endpoint_handler(endpoint: object, server_kind: str) -> Handler:
    """Dispatch messages to `endpoint`'s methods, refusing what the catalogue lacks."""

    async def handle(method: str, args: dict[str, Any]) -> Any:
        spec = CATALOGUE.get(method)
        if spec is None or spec.server != server_kind:
            raise UnknownMethod(f"{method!r} is not a {server_kind} RPC method")
        fn = getattr(endpoint, method, None)
        if fn is None:
            raise UnknownMethod(f"{type(endpoint).__name__} does not implement {method!r}")
        if not isinstance(args, dict):
            raise BadMessage(f"arguments of {method} must be an object")
        try:
            inspect.signature(fn).bind(**args)
        except TypeError as exc:
            raise BadMessage(f"bad arguments for {method}: {exc}") from None
        return await fn(**args)

    return handle


class Bus(abc.ABC):
    @abc.abstractmethod
    async def call(self, topic: str, method: str, args: dict[str, Any] | None = None,
                   timeout: float | None = None) -> Any:
        """Send and wait for the reply (or raise RemoteError / BusTimeout)."""

    @abc.abstractmethod
    async def cast(self, topic: str, method: str, args: dict[str, Any] | None = None) -> None:
        """Send without waiting."""

    @abc.abstractmethod
    async def serve(self, topic: str, handler: Handler) -> str:
        """Consume `topic`, running `handler` for every message; returns a tag.

        Several consumers of one topic compete: each message goes to one."""

    @abc.abstractmethod
    async def unserve(self, topic: str, tag: str | None = None) -> None:
        """Stop that consumer (all of the topic's when no tag is given); messages
        sent meanwhile wait in the topic's queue."""

    @abc.abstractmethod
    async def close(self) -> None:
        pass

    @staticmethod
    def timeout_for(method: str, timeout: float | None) -> float:
        """The method's timeout; refuses methods the catalogue does not list."""
        spec = CATALOGUE.get(method)
        if spec is None:
            raise UnknownMethod(f"{method!r} is not in the RPC catalogue")
        return spec.timeout if timeout is None else timeout
