"""Outbound transport security: MTA-STS (RFC 8461), DANE (RFC 7672), TLS-RPT (RFC 8460)."""

import warnings

# cryptography 51 deprecates DSA, and dnspython (2.9) touches its DSA key class as its DNSSEC
# module loads (dnssec.py, denial.py import it): a warning on the stderr of every CLI command,
# where an operator reads one-line errors. DNSSEC's DSA algorithms are long obsolete (RFC 8624
# 3.1: MUST NOT sign with them); nothing for an operator to act on.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"dns\.dnssecalgs")
