"""Typed API errors, mapped from the API server's Status responses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class StatusCause:
    reason: str
    message: str
    field: str


@dataclass
class ApiError(Exception):
    """Any non-2xx answer of the API server (or a transport failure, code 0)."""

    code: int
    reason: str = ""
    message: str = ""
    causes: list[StatusCause] = field(default_factory=list)
    retry_after_seconds: float | None = None
    body: dict[str, Any] | None = None

    def __str__(self) -> str:
        text = f"{self.code} {self.reason}: {self.message}"
        if self.causes:
            text += " (" + "; ".join(f"{c.field}: {c.message}" for c in self.causes) + ")"
        return text


class BadRequest(ApiError): ...


class Unauthorized(ApiError): ...


class Forbidden(ApiError): ...


class NotFound(ApiError): ...


class MethodNotAllowed(ApiError): ...


class Conflict(ApiError):
    """409 with reason Conflict: a stale resourceVersion or a failed uid precondition."""


class AlreadyExists(ApiError):
    """409 with reason AlreadyExists."""


class Gone(ApiError):
    """410 (reason Expired or Gone): the resourceVersion is too old; relist."""


class Invalid(ApiError):
    """422: the object failed validation (OpenAPI schema, CEL rules); causes name the fields."""


class TooManyRequests(ApiError): ...


class ServerError(ApiError):
    """5xx, or a transport failure/timeout (code 0)."""


class ReconcileError(Exception):
    """A pass that failed for reasons the API server gave, already reported in the object's
    status: the work queue backs off and the log says so in one line, without a stack trace
    (kept for bugs)."""


#: The cause of a 403 to a create in a namespace being deleted.
NAMESPACE_TERMINATING_CAUSE = "NamespaceTerminating"


def is_namespace_terminating(err: BaseException) -> bool:
    """A create refused because the namespace is being deleted: nothing to do, everything in it
    goes soon (kube-controller-manager's controllers skip it quietly)."""
    return isinstance(err, Forbidden) and any(c.reason == NAMESPACE_TERMINATING_CAUSE for c in err.causes)


def is_not_found(err: BaseException) -> bool:
    return isinstance(err, NotFound)


def is_conflict(err: BaseException) -> bool:
    return isinstance(err, Conflict)


def is_already_exists(err: BaseException) -> bool:
    return isinstance(err, AlreadyExists)
