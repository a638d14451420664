"""The decoupled probes: linear (global separability), kNN (local cluster structure), geometry diagnostics.

``PROBES`` is the one registry of probes: the Snakemake rule's ``{probe}`` wildcard, the config section that holds
a probe's settings (``probes.<name>``), the runner (``acft.probes.run.run_probe``) and the row validation
(``acft.results``) all read it. A new probe is a module here with an ``evaluate`` function (see
``acft.probes.run.run_probe``), its entry below, and its settings section in ``workflow/schemas/config.schema.yaml``.

Kept free of heavy imports: the Snakefile reads the registry at parse time; a probe's module is imported only
when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    module: (
        str  # acft.probes.<module>: its evaluate(data, emb, train, **settings) -> records (imported when run)
    )
    rows: tuple[str, ...]  # the names its result rows carry in column ``probe``


# name (the {probe} wildcard and the config section probes.<name>) -> probe
PROBES = {
    "knn": Probe("knn", rows=("knn_majority", "knn_weighted")),
    "linear": Probe("linear", rows=("linear",)),
    "geometry": Probe("geometry", rows=("geometry",)),
}
