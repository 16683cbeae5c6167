"""Runs one import in its own process, so the fault suite can SIGKILL it mid-file.

python import_child.py URL CSV_PATH SHOP MAPPING CHUNK_ROWS
"""

from __future__ import annotations

import sys

from automail.db import make_engine
from automail.imports import import_file

if __name__ == "__main__":
    url, path, shop, mapping, chunk = sys.argv[1:6]
    result = import_file(make_engine(url), path, "orders", shop, mapping, int(chunk))
    print(result.summary(), flush=True)
