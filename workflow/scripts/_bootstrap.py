"""Makes a job import the acft package of this checkout, whatever else the job environment offers.

Snakemake's script preamble appends this scripts directory and the workflow's directories to the *end* of
sys.path, behind site-packages, where an editable install of another checkout (a ``.pth`` line) or a
PYTHONPATH entry would provide its own ``acft``: the job would run that code while rerun triggers follow this
one. So this checkout's ``workflow/`` goes to the front, and an ``acft`` already imported from elsewhere is an
error rather than a silent mix of two versions.
"""

import os
import sys
from pathlib import Path

PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)

sys.path[:] = [PACKAGE_PARENT] + [p for p in sys.path if os.path.realpath(p or ".") != PACKAGE_PARENT]

_loaded = sys.modules.get("acft")
if _loaded is not None:
    _origin = os.path.realpath(os.path.dirname(getattr(_loaded, "__file__", None) or "."))
    if _origin != os.path.join(PACKAGE_PARENT, "acft"):
        raise ImportError(
            f"acft was already imported from {_origin}, not from this checkout's {PACKAGE_PARENT}/acft; "
            "import _bootstrap before anything that imports acft"
        )
