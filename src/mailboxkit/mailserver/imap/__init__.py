"""IMAP4rev1 server (RFC 3501) and the extensions MailboxKit implements.

The wire layer is a pipeline of pure modules, each one step:

- ``wire``: bytes to command frames (lines plus literals), enforcing size limits;
- ``tokens``: the tokenizer over a frame (atoms, strings, literals, sequence sets, dates),
  with ``sequence_set`` and ``mailbox_names`` (modified UTF-7) as its value types;
- ``commands`` (with ``mailbox_commands``, ``search``, ``fetch``): typed frozen commands;
- ``responses``: response values and their byte-exact serializer, with ``body_structure``
  for ENVELOPE and BODYSTRUCTURE;
- ``errors``: protocol exceptions that render their own response.
"""
