"""IMAP4rev1 server (RFC 3501), IMAP4rev2 beside it for clients that enable it (RFC 9051),
and the extensions MailboxKit implements.

The wire layer is a pipeline of pure modules, each one step:

- ``wire``: bytes to command frames (lines plus literals), enforcing size limits;
- ``tokens``: the tokenizer over a frame (atoms, strings, literals, sequence sets, dates),
  with ``sequence_set`` (``$`` of SEARCHRES included) and ``mailbox_names`` (modified UTF-7,
  or UTF-8 under IMAP4rev2) as its value types;
- ``commands`` (with ``mailbox_commands``, ``search``, ``fetch``): typed frozen commands;
- ``responses``: response values and their byte-exact serializer, with ``values`` for data
  values (strings, literals, ``literal8``) and ``body_structure`` for ENVELOPE and
  BODYSTRUCTURE;
- ``errors``: protocol exceptions that render their own response.
"""
