"""Parameter-free clustering of feature vectors with FINCH (Sarfraz et al., CVPR 2019).

FINCH links every sample to its first (nearest) neighbour, takes the connected components of that graph
as clusters, and repeats on the cluster means: one call gives a hierarchy of partitions, finest first,
without a number of clusters to choose. PointSAM uses it to find prototypes of object features; any
chapter that needs "the kinds of things in these features" can call it. Wraps the ``finch-clust``
package (imported on first use; no torch here).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from samlib.errors import InvalidInputError

__all__ = ["cluster_means", "finch_partitions", "finch_prototypes"]


def _features(features: Any, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise InvalidInputError(f"features must be a 2-D (N, D) array, got shape {x.shape}.")
    if x.shape[0] < min_rows:
        raise InvalidInputError(f"FINCH needs at least {min_rows} feature vectors, got {x.shape[0]}.")
    if not np.isfinite(x).all():
        raise InvalidInputError("features contain NaN or infinite values.")
    return x


def finch_partitions(features: Any, distance: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """The FINCH hierarchy of ``features``.

    Arguments:
      features (np.ndarray): (N, D) feature vectors, N >= 2.
      distance (str): "cosine" (FINCH's recommendation), "euclidean", ...

    Returns:
      (np.ndarray, np.ndarray): labels (N, P) int64, one column per partition, finest first, and the
        number of clusters of each partition (P,), decreasing.
    """
    x = _features(features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # finch warns about optional ANN back-ends it does not need here
        from finch import FINCH

        labels, num_clusters, _ = FINCH(x, distance=distance, verbose=False)
    return np.asarray(labels, dtype=np.int64).reshape(x.shape[0], -1), np.asarray(
        num_clusters, dtype=np.int64
    )


def cluster_means(features: Any, labels: Any) -> np.ndarray:
    """Mean feature of each cluster: (C, D) for labels 0 .. C-1 (every label must occur)."""
    x = _features(features, min_rows=1)
    lab = np.asarray(labels, dtype=np.int64)
    if lab.shape != (x.shape[0],):
        raise InvalidInputError(f"labels must have shape ({x.shape[0]},), got {lab.shape}.")
    n = int(lab.max()) + 1
    counts = np.bincount(lab, minlength=n)
    if (counts == 0).any():
        raise InvalidInputError("labels must be 0 .. C-1 with every cluster non-empty.")
    sums = np.zeros((n, x.shape[1]))
    np.add.at(sums, lab, x)
    return sums / counts[:, None]


def finch_prototypes(features: Any, distance: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
    """Prototypes: the cluster means of the coarsest FINCH partition that has more than one cluster.

    When even the finest partition is a single cluster (e.g. two samples), that one mean is returned.

    Returns:
      (np.ndarray, np.ndarray): prototypes (C, D) float64 and the labels (N,) of the chosen partition.
    """
    x = _features(features)
    labels, num_clusters = finch_partitions(x, distance)
    several = np.flatnonzero(num_clusters > 1)
    column = int(several[-1]) if len(several) else 0
    chosen = labels[:, column]
    _, chosen = np.unique(chosen, return_inverse=True)
    return cluster_means(x, chosen), chosen.astype(np.int64)
