"""The one exception a site turns into a refusal: a fixed code for the wire, detail for its log."""

from __future__ import annotations

from protocol import Refusal


class SiteRefusal(Exception):
    """The site will not do what a message asked.

    Parameters
    ----------
    code:
        The reason the server is told (a :class:`protocol.Refusal`).
    detail:
        What the site's own log and audit record keep: values, paths, file names. It never
        leaves the site.
    """

    def __init__(self, code: Refusal, detail: str = "") -> None:
        self.code, self.detail = Refusal(code), detail
        super().__init__(f"{self.code.value}: {detail}" if detail else self.code.value)
