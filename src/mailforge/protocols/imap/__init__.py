"""IMAP4rev1 (RFC 3501) and the extensions modern clients use."""
