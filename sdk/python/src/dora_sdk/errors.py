"""What a call to the API can come to besides success."""

from __future__ import annotations

from typing import Any

import httpx


class DoraError(Exception):
    """Every error the SDK raises."""


class ConfigError(DoraError):
    """The settings cannot make a client: no profile, a CA that cannot be read."""


class StreamError(DoraError):
    """A stream (a watch, a followed log, an exec session) broke or sent what is not JSON."""


class WaitTimeout(DoraError):
    """A wait ended before its condition held; ``last`` is the object as last seen."""

    def __init__(self, message: str, last: Any = None) -> None:
        super().__init__(message)
        self.last = last


class ApiError(DoraError):
    """An error answer of the API, with the fields of its body (``{"error": {...}}``).

    ``field`` is the dotted path of the field at fault (``spec.replica.count``), ``document``
    the index (from 0) of the document of an apply at fault, ``results`` what each document
    of an apply came to.
    """

    def __init__(
        self,
        status: int,
        reason: str | None,
        message: str | None,
        field: str | None = None,
        document: int | None = None,
        results: list[Any] | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.field = field
        self.document = document
        self.results = results or []
        super().__init__(self._text())

    def _text(self) -> str:
        if self.message is None:
            return f"the API answered {self.status}"
        text = self.message
        if self.field and self.field not in text:
            text = f"{self.field}: {text}"
        if self.document is not None and not text.startswith("document "):
            text = f"document {self.document + 1}: {text}"
        return text

    @classmethod
    def from_body(cls, status: int, body: Any) -> ApiError:
        """The error an answer with ``status`` and JSON ``body`` carries."""
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        document = error.get("document")
        kind = _BY_STATUS.get(status, ApiError)
        return kind(
            status,
            error.get("reason"),
            error.get("message"),
            error.get("field"),
            document if isinstance(document, int) else None,
            body.get("results") if isinstance(body, dict) else None,
        )

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The error an unsuccessful answer carries; its body must have been read."""
        try:
            body = response.json()
        except ValueError:
            body = None
        return cls.from_body(response.status_code, body)


class NotFound(ApiError):
    """404: the object (or path) is not there."""


class Conflict(ApiError):
    """409: a stale version, an object that already exists, a fenced write."""


class Invalid(ApiError):
    """422: a field is invalid; ``field`` names it."""


class Forbidden(ApiError):
    """403: the token may not do this."""


class Unauthorized(ApiError):
    """401: no valid token."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
}
