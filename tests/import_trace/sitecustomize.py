"""Import trace for the rerun tests: with ACFT_TRACE_IMPORTS=<dir> and this folder on PYTHONPATH, every Python
process that runs a Snakemake job writes, at exit, its rule and the acft modules it loaded to <dir>/<pid>.tsv.

It is the independent record of "the code a job runs" that the code inputs derived by acft.code_inputs are
checked against (tests/test_reruns.py).
"""

import atexit
import os
import sys


def _write_trace() -> None:
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    if job is None:  # Snakemake itself, or any other process
        return
    files = sorted(
        module.__file__
        for name, module in list(sys.modules.items())
        if (name == "acft" or name.startswith("acft.")) and getattr(module, "__file__", None)
    )
    with open(os.path.join(os.environ["ACFT_TRACE_IMPORTS"], f"{os.getpid()}.tsv"), "w") as out:
        out.writelines(f"{job.rule}\t{path}\n" for path in files)


if os.environ.get("ACFT_TRACE_IMPORTS"):
    atexit.register(_write_trace)
