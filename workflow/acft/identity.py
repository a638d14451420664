"""The identity of one run of the grid, shared by planning, tuning, extraction and the probes.

Kept apart from ``acft.plan`` (config validation, grid expansion) so that a job's code inputs, which follow its
imports, do not include the planner: an edit to the planner reruns no job.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Run:
    """One cell of the grid: a backbone tuned with a method on a dataset's evaluation round.

    ``fold`` is the evaluation round (0 = fixed split); ``seed`` is the tuning seed (0 for the frozen
    backbone, whose embeddings serve every round: its file is named by fold 0, seed 0).
    """

    dataset: str
    backbone: str
    method: str
    fold: int
    seed: int

    @classmethod
    def from_wildcards(cls, wildcards) -> Run:
        """The run a job's wildcards name (a Snakemake ``Wildcards`` or a dict); no fold or seed means 0."""
        return cls(
            wildcards["dataset"],
            wildcards["backbone"],
            wildcards["method"],
            int(wildcards.get("fold", 0)),
            int(wildcards.get("seed", 0)),
        )
