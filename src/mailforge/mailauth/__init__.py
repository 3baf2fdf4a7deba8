"""Mail authentication: DKIM keys and signing (keys.py, signing.py); the inbound checks
(SPF, DKIM, DMARC, ARC) and their Authentication-Results header (inbound.py, dmarc.py)."""
