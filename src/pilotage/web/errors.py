"""Every refusal of the web pages' sign-in: one class each.

Each subclasses the :mod:`pilotage.errors` class whose HTTP status it shares, so a page
shows the sentence with the right status and a test tells the refusals apart::

    Unauthenticated (401)
    ├── UnknownLink          a sign-in link this pool never issued (or mistyped)
    ├── LinkExpired          a sign-in link older than its lifetime
    ├── LinkUsed             a sign-in link already spent (each opens one session)
    └── NotSignedIn          no session, token or socket: the sign-in page
    Denied (403)
    ├── RoleNotForPages      a pilot, factory or frontend credential (pages are for people)
    └── CrossOrigin          a form posted from another site
    NotFound (404)
    └── NotVisible           a job that does not exist or is not the caller's
"""

from __future__ import annotations

from pilotage.errors import Denied, NotFound, Unauthenticated


class UnknownLink(Unauthenticated):
    """The sign-in link was never issued by this pool (or was mistyped)."""


class LinkExpired(Unauthenticated):
    """The sign-in link is older than its lifetime."""


class LinkUsed(Unauthenticated):
    """The sign-in link was already spent: each link opens one session."""


class NotSignedIn(Unauthenticated):
    """The visitor has no session, token or socket credential."""


class RoleNotForPages(Denied):
    """The credential's role is not user or admin."""


class CrossOrigin(Denied):
    """A form was posted from a page of another origin."""


class NotVisible(NotFound):
    """The job does not exist, or it is not the caller's (the pages do not say which)."""
