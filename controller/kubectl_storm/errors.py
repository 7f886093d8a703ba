"""One-line errors, worded like kubectl's, and the exit codes of `kubectl storm`."""

from __future__ import annotations

from controller.runtime.errors import ApiError, Unauthorized

EXIT_OK = 0
EXIT_ERROR = 1
#: `status --watch`: the rollout cannot go on without the user (Progressing=False).
EXIT_STALLED = 2
#: `status --watch`: the rollout is paused (spec.paused), so it will not finish by itself.
EXIT_PAUSED = 3


class CliError(Exception):
    """An error the user can act on: printed as one line on stderr, exit code 1."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = one_line(message)


def one_line(text: str) -> str:
    return " ".join(text.split())


def api_error_message(err: ApiError, server: str) -> str:
    """kubectl's wording: the API server's own message for what it refused (it names the object
    and, for 403, the user and the verb), `error: ...` for what never reached it."""
    if err.code == 0:
        return f"error: cannot reach the cluster at {server}: {one_line(err.message)}"
    if isinstance(err, Unauthorized):
        return "error: You must be logged in to the server (Unauthorized)"
    reason = err.reason or str(err.code)
    return f"Error from server ({reason}): {one_line(err.message)}"
