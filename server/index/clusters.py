"""The shape of a collection without a query: groups of similar items (spherical k-means on the
whole images' unit vectors), each with its size and the items nearest its centre.

Spherical k-means with k-means++ seeding, deterministic for a given collection: cosine is the
similarity every other part of Lookalike uses, and the work is bounded by the sample clustered
(at most `sample` whole images, drawn uniformly). USearch's own clustering (`Index.cluster`)
was tried first: on planted groups it is as pure at a few hundred items and up, but it refuses
an index of under about 400 vectors ("Index too small to cluster"), which is where a new
collection starts; scikit-learn's KMeans would bring SciPy into the serving install.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Partition", "spherical_kmeans"]

ITERATIONS = 30  # at most; a run stops when no vector changes its cluster
RESTARTS = 4  # seedings tried
SEED = 0


@dataclasses.dataclass(frozen=True)
class Partition:
    labels: np.ndarray  # int[N]: each vector's cluster
    similarity: np.ndarray  # float32[N]: each vector's cosine to its cluster's centre
    centres: np.ndarray  # float32[K, D], unit norm


def spherical_kmeans(vectors: np.ndarray, count: int) -> Partition:
    """`count` clusters of unit vectors (fewer when there are fewer vectors): the tightest of
    RESTARTS runs from different seeds (the highest total cosine of vectors to their centre)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    count = min(count, len(vectors))
    rng = np.random.default_rng(SEED)
    runs = [_kmeans(vectors, _seeds(vectors, count, rng)) for _ in range(RESTARTS)]
    return max(runs, key=lambda run: float(run.similarity.sum()))


def _kmeans(vectors: np.ndarray, centres: np.ndarray) -> Partition:
    count = len(centres)
    labels = np.full(len(vectors), -1)
    for _ in range(ITERATIONS):
        scores = vectors @ centres.T
        assigned = scores.argmax(axis=1)
        if np.array_equal(assigned, labels):
            break
        labels = assigned
        centres = _centres(vectors, labels, scores, count)
    similarity = (vectors @ centres.T)[np.arange(len(vectors)), labels]
    return Partition(labels, similarity.astype(np.float32), centres)


def _seeds(vectors: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: each next seed drawn with probability by its squared distance (1 - cosine)
    to the nearest seed so far."""
    chosen = [int(rng.integers(len(vectors)))]
    nearest = vectors @ vectors[chosen[0]]
    for _ in range(1, count):
        weights = np.clip(1.0 - nearest, 0.0, None) ** 2
        total = float(weights.sum())
        if total <= 0:  # every vector equals a seed: take any other
            pick = next(i for i in range(len(vectors)) if i not in chosen)
        else:
            pick = int(rng.choice(len(vectors), p=weights / total))
        chosen.append(pick)
        nearest = np.maximum(nearest, vectors @ vectors[pick])
    return vectors[chosen].copy()


def _centres(vectors: np.ndarray, labels: np.ndarray, scores: np.ndarray, count: int) -> np.ndarray:
    """Each cluster's normalised mean; an emptied cluster takes the vector farthest from its
    own centre."""
    members = np.zeros((count, len(vectors)), dtype=np.float32)
    members[labels, np.arange(len(vectors))] = 1.0
    sums = members @ vectors
    norms = np.linalg.norm(sums, axis=1)
    farthest = np.argsort(scores[np.arange(len(vectors)), labels])  # least like their centre
    for empty, vector in zip(np.flatnonzero(norms < 1e-9), farthest, strict=False):
        sums[empty], norms[empty] = vectors[vector], 1.0
        labels[vector] = empty
    return (sums / norms[:, None]).astype(np.float32)
