"""Command type -> handler: the one dispatch table of the IMAP server.

A handler is called only in a state that ``state.ALLOWED`` admits for its command, so each
handler's ``state`` parameter is typed with the states it can be given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mailboxkit.mailserver.imap import (
    append_handler,
    fetch_handler,
    idle,
    list_handlers,
    mailbox_handlers,
    message_handlers,
    quota_handlers,
    search_handler,
    select_handlers,
    session_handlers,
)
from mailboxkit.mailserver.imap import commands as c
from mailboxkit.mailserver.imap.context import Context, Outcome

Handler = Callable[[Context, Any, Any], Awaitable[Outcome]]

HANDLERS: dict[type[c.Command], Handler] = {
    c.Capability: session_handlers.handle_capability,
    c.Noop: session_handlers.handle_noop,
    c.Logout: session_handlers.handle_logout,
    c.Id: session_handlers.handle_id,
    c.Enable: session_handlers.handle_enable,
    c.Namespace: session_handlers.handle_namespace,
    c.StartTls: session_handlers.handle_starttls,
    c.Login: session_handlers.handle_login,
    c.Authenticate: session_handlers.handle_authenticate,
    c.Idle: idle.handle_idle,
    c.List: list_handlers.handle_list,
    c.Lsub: list_handlers.handle_lsub,
    c.Status: list_handlers.handle_status,
    c.Create: mailbox_handlers.handle_create,
    c.Delete: mailbox_handlers.handle_delete,
    c.Rename: mailbox_handlers.handle_rename,
    c.Subscribe: mailbox_handlers.handle_subscribe,
    c.Unsubscribe: mailbox_handlers.handle_unsubscribe,
    c.Select: select_handlers.handle_select,
    c.Examine: select_handlers.handle_select,
    c.Unselect: select_handlers.handle_unselect,
    c.Close: select_handlers.handle_close,
    c.Check: select_handlers.handle_check,
    c.Append: append_handler.handle_append,
    c.Fetch: fetch_handler.handle_fetch,
    c.Search: search_handler.handle_search,
    c.Store: message_handlers.handle_store,
    c.Copy: message_handlers.handle_copy,
    c.Move: message_handlers.handle_move,
    c.Expunge: message_handlers.handle_expunge,
    c.GetQuota: quota_handlers.handle_getquota,
    c.GetQuotaRoot: quota_handlers.handle_getquotaroot,
    c.SetQuota: quota_handlers.handle_setquota,
}
