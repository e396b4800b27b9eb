"""MailboxKit: a self-hostable email server appliance for AI agents."""
