"""A collection whose shape is known: planted groups of near-copies and a few vectors unlike
any other, as vectors of the tiny model's 16 dimensions."""

from __future__ import annotations

import numpy as np

DIMS = 16
GROUPS, PER_GROUP, OUTLIERS = 4, 6, 3


def planted(seed: int = 3) -> dict[str, np.ndarray]:
    """Four groups of six vectors close to their own centre, and three vectors far from
    every centre (the centres and outliers are orthogonal directions)."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(DIMS, DIMS)))[0]  # orthonormal directions
    vectors = {}
    for group in range(GROUPS):
        for member in range(PER_GROUP):
            near = basis[group] + 0.15 * rng.normal(size=DIMS) / np.sqrt(DIMS)
            vectors[f"group{group}-{member}"] = near / np.linalg.norm(near)
    for number in range(OUTLIERS):
        vectors[f"odd-{number}"] = basis[GROUPS + number]
    return vectors


def group_of(item_id: str) -> str:
    return item_id.split("-")[0]
