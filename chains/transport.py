"""Transport errors shared by the adapters' HTTP clients (EVM JSON-RPC, Tron HTTP API), and the ``outcome`` label
each maps to in :meth:`chains.base.RpcObserver.rpc_request`."""

from __future__ import annotations

from chains.base import FatalChainError, MalformedResponse, RangeTooLarge, RateLimited, RetryableChainError


class TransportTimeout(RetryableChainError):
    """No answer within the request timeout."""


class ConnectionFailed(RetryableChainError):
    """Refused, reset or otherwise broken connection."""


class TransientHttpStatus(RetryableChainError):
    """An HTTP status worth retrying elsewhere or later (5xx, 408)."""


class HttpStatusError(FatalChainError):
    """An HTTP status that retrying will not fix (401 bad key, 404 API disabled, other 4xx)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def outcome_of(exc: BaseException) -> str:
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, RangeTooLarge):
        return "range_too_large"
    if isinstance(exc, MalformedResponse):
        return "malformed"
    if isinstance(exc, TransportTimeout):
        return "timeout"
    if isinstance(exc, ConnectionFailed):
        return "connection_error"
    if isinstance(exc, TransientHttpStatus | HttpStatusError):
        return "http_error"
    return "rpc_error"
