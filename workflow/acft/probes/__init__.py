"""The decoupled probes: linear (global separability), kNN (local cluster structure), geometry diagnostics."""

from .geometry import geometry
from .knn import knn_probe
from .knn_search import nearest_neighbours
from .linear import linear_probe
from .run import read_embeddings, run_geometry, run_knn, run_linear

__all__ = [
    "geometry",
    "knn_probe",
    "linear_probe",
    "nearest_neighbours",
    "read_embeddings",
    "run_geometry",
    "run_knn",
    "run_linear",
]
