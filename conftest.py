"""Test-session setup shared by the unit tests and the notebooks run by nbval.

Set before any kernel starts, so the notebooks inherit it: the cow mesh comes
from the read-only copy beside the checkout, and the network is never used.
"""

import os
from pathlib import Path

_shared_mesh = Path(__file__).resolve().parent.parent / "shared" / "data" / "cow_mesh"
if "COW_MESH_DIR" not in os.environ and _shared_mesh.is_dir():
    os.environ["COW_MESH_DIR"] = str(_shared_mesh)
os.environ.setdefault("VOLRENDER_OFFLINE", "1")
