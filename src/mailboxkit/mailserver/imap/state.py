"""Session states as types (RFC 3501 §3) and the one table of commands allowed in each.

``NotAuthenticated`` -> (LOGIN, AUTHENTICATE) -> ``Authenticated`` -> (SELECT, EXAMINE) ->
``Selected`` -> (CLOSE, UNSELECT, a failed SELECT) -> ``Authenticated``; LOGOUT from any state
-> ``LoggedOut``. Each state carries what is valid only in it: the user once authenticated,
the mailbox view once selected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.mailbox_view import MailboxView


@dataclass(frozen=True, slots=True)
class User:
    """Who is logged in: one inbox (the IMAP user is the inbox address)."""

    inbox_id: str
    account_id: str
    address: str


@dataclass(frozen=True, slots=True)
class NotAuthenticated:
    """RFC 3501 §3.1."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    """RFC 3501 §3.2."""

    user: User


@dataclass(frozen=True, slots=True)
class Selected:
    """RFC 3501 §3.3: ``view`` is the session's picture of the mailbox (sequence numbers)."""

    user: User
    view: MailboxView

    @property
    def read_only(self) -> bool:
        return self.view.read_only


@dataclass(frozen=True, slots=True)
class LoggedOut:
    """RFC 3501 §3.4: the connection closes after the tagged response."""


State: TypeAlias = NotAuthenticated | Authenticated | Selected | LoggedOut

_ANY: frozenset[type[c.Command]] = frozenset({c.Capability, c.Noop, c.Logout, c.Id})
"""RFC 3501 §6.1, and ID (RFC 2971 §3.1: any state)."""

_AUTHENTICATED: frozenset[type[c.Command]] = _ANY | {
    c.Enable,
    c.Namespace,
    c.Select,
    c.Examine,
    c.Create,
    c.Delete,
    c.Rename,
    c.Subscribe,
    c.Unsubscribe,
    c.List,
    c.Lsub,
    c.Status,
    c.Append,
    c.Idle,
    c.GetQuota,  # RFC 9208 §4: QUOTA commands in the authenticated and selected states
    c.GetQuotaRoot,
    c.SetQuota,
}

ALLOWED: dict[type[State], frozenset[type[c.Command]]] = {
    NotAuthenticated: _ANY | {c.StartTls, c.Authenticate, c.Login},  # RFC 3501 §6.2
    Authenticated: _AUTHENTICATED,  # RFC 3501 §6.3, ENABLE only here (RFC 5161 §3.1)
    Selected: (_AUTHENTICATED - {c.Enable})
    | {
        c.Check,
        c.Close,
        c.Unselect,
        c.Expunge,
        c.Search,
        c.Fetch,
        c.Store,
        c.Copy,
        c.Move,
    },  # RFC 3501 §6.4, UNSELECT (RFC 3691), MOVE (RFC 6851)
    LoggedOut: frozenset(),
}
"""The commands each state accepts; anything else is answered BAD."""

SUPPORTED: frozenset[type[c.Command]] = frozenset().union(*ALLOWED.values())
"""Commands implemented in some state; one parsed but not here is answered "not supported"."""


def allowed(state: State, command: c.Command) -> bool:
    """Whether ``command`` may run in ``state``."""
    return type(command) in ALLOWED[type(state)]
