"""Hot-path helpers for the Tally service, each a compiled module with a pure-Python twin.

Import the front modules (`fastpath.codec`), which choose the twin at import time; set
TALLY_NO_EXTENSIONS=1 to force the pure-Python ones.
"""
