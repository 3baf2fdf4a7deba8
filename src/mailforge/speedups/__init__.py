"""Chooses between the Cython extensions and their pure-Python twins, once, at import.

The compiled modules land here as mailforge.speedups._<name>; MAILFORGE_PUREPYTHON=1 forces
the twins (as msgpack's MSGPACK_PUREPYTHON does). The Cython core arrives in its own issue;
until then every module is the twin.
"""

import os

FORCED_PURE = os.environ.get("MAILFORGE_PUREPYTHON", "") not in ("", "0")
IMPLEMENTATION = "python"
