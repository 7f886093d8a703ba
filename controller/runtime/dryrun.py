"""What the API server answered to a dry-run create (dryRun=All), remembered per object.

A controller asks the API server, before acting on a new template, whether it would accept an
object made from it; the answer holds until the template changes. `Verdicts` keeps one answer per
owner (a controller key) and subject (say a role) for one version (say a template hash or a
revision); `rejection` tells an answer about the object from any other failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.runtime.errors import ApiError, BadRequest, Invalid


@dataclass(frozen=True, slots=True)
class Verdict:
    version: str
    rejection: str | None  # the API server's message; None: accepted


def rejection(err: ApiError) -> str | None:
    """The API server's message when `err` says the object itself is refused (422 Invalid, 400
    BadRequest); None for any other failure (throttled, unavailable, forbidden), which says
    nothing about the object and is worth asking again."""
    return err.message if isinstance(err, Invalid | BadRequest) else None


class Verdicts:
    def __init__(self) -> None:
        self._verdicts: dict[str, dict[str, Verdict]] = {}

    def get(self, key: str, subject: str, version: str) -> Verdict | None:
        """The verdict for `subject` of `key` if it was given for `version`."""
        verdict = self._verdicts.get(key, {}).get(subject)
        return verdict if verdict is not None and verdict.version == version else None

    def record(self, key: str, subject: str, verdict: Verdict) -> None:
        self._verdicts.setdefault(key, {})[subject] = verdict

    def keep(self, key: str, subjects: set[str]) -> None:
        """Forget the verdicts of subjects that are gone (a role that left the spec)."""
        verdicts = self._verdicts.get(key)
        if verdicts:
            for subject in set(verdicts) - subjects:
                del verdicts[subject]

    def forget(self, key: str) -> None:
        self._verdicts.pop(key, None)
