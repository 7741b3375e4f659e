"""Which catalog category a query shows, from what the catalog already knows.

Two predictors, both measured in docs/quality.md:
- a linear probe (multinomial logistic regression) trained at build time on the catalog's
  own image vectors and their products' categories; its regularisation is chosen by
  cross-validation on the catalog itself, never on shopper photos;
- neighbour votes: the similarity-weighted categories of the query's nearest products.
The engine adds `search.category_weight` x (the category's predicted share) to each of the
top candidates' similarity before ordering them, so the likely category comes first while a
near-copy of the photo from another category still does (`search.category_probe`,
`search.category_votes`). Neither needs a text tower, so both work with image-only models.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

PROBE_FILE = "category_probe.npz"
# A category needs this many catalog images before the probe learns it.
MIN_IMAGES_PER_CATEGORY = 5
# Larger catalogs train on a stratified sample: the probe levels off long before.
MAX_TRAINING_ROWS = 20_000
# Embeddings are unit vectors (components ~0.03); scaled up, LBFGS converges in fewer steps.
FEATURE_SCALE = 10.0
REGULARISATION_GRID = (3e-4, 1e-3, 3e-3)
FOLDS = 3
LBFGS_STEPS = 100  # converged: 200 steps gave the same validation accuracy, 2x slower


@dataclass(frozen=True)
class CategoryProbe:
    categories: tuple[str, ...]
    weights: np.ndarray  # categories x dim, applied to FEATURE_SCALE * vector
    bias: np.ndarray
    regularisation: float
    cross_validated_accuracy: float

    def probabilities(self, query: np.ndarray) -> np.ndarray:
        logits = self.weights @ (FEATURE_SCALE * query.astype(np.float32)) + self.bias
        exp = np.exp(logits - logits.max())
        probabilities: np.ndarray = exp / exp.sum()
        return probabilities

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(
                handle,
                categories=np.array(self.categories, dtype=str),
                weights=self.weights.astype(np.float32),
                bias=self.bias.astype(np.float32),
                regularisation=np.float64(self.regularisation),
                accuracy=np.float64(self.cross_validated_accuracy),
            )

    @classmethod
    def load(cls, path: Path) -> CategoryProbe:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                tuple(str(c) for c in data["categories"]),
                data["weights"].astype(np.float32),
                data["bias"].astype(np.float32),
                float(data["regularisation"]),
                float(data["accuracy"]),
            )


def _fit(
    vectors: np.ndarray, labels: np.ndarray, classes: int, regularisation: float
) -> tuple[np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    inputs = torch.from_numpy(FEATURE_SCALE * vectors)
    targets = torch.from_numpy(labels)
    layer = torch.nn.Linear(vectors.shape[1], classes)
    optimiser = torch.optim.LBFGS(
        layer.parameters(), max_iter=LBFGS_STEPS, history_size=20, line_search_fn="strong_wolfe"
    )

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.cross_entropy(layer(inputs), targets)
        value = value + regularisation * (layer.weight**2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimiser.step(loss)
    return layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()


def _accuracy(
    weights: np.ndarray, bias: np.ndarray, vectors: np.ndarray, labels: np.ndarray
) -> float:
    logits = (FEATURE_SCALE * vectors) @ weights.T + bias
    return float((logits.argmax(axis=1) == labels).mean())


def _training_rows(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows = np.arange(len(labels))
    if len(rows) <= MAX_TRAINING_ROWS:
        return rows
    share = MAX_TRAINING_ROWS / len(rows)
    picked = [
        rng.choice(members, max(MIN_IMAGES_PER_CATEGORY, int(len(members) * share)), False)
        for members in (rows[labels == c] for c in np.unique(labels))
    ]
    return np.sort(np.concatenate(picked))


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The probe's LBFGS steps are small matrix products, whose hand-offs between threads
    cost more than they share: 3,409 rows trained in 0.9 s on one thread, 3.0 s on two;
    20,000 rows (MAX_TRAINING_ROWS) 4.5 s and 5.0 s. The setting is the process's: builds
    train in index_builder's process, once the model has embedded every photo."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_probe(
    vectors: np.ndarray, categories: Sequence[str], groups: Sequence[str]
) -> CategoryProbe | None:
    """A probe over the categories with enough images, or None when fewer than two have.
    `groups` (the product of each row) keeps one product's images in one fold, so the
    cross-validation does not reward memorising a product seen in another photo."""
    with _one_torch_thread():
        return _train_probe(vectors, categories, groups)


def _train_probe(
    vectors: np.ndarray, categories: Sequence[str], groups: Sequence[str]
) -> CategoryProbe | None:
    names, counts = np.unique(np.asarray(categories, dtype=str), return_counts=True)
    known = [n for n, c in zip(names, counts, strict=True) if n and c >= MIN_IMAGES_PER_CATEGORY]
    if len(known) < 2:
        return None
    index_of = {name: i for i, name in enumerate(known)}
    usable = np.array([c in index_of for c in categories], dtype=bool)
    labels_all = np.array([index_of.get(c, -1) for c in categories], dtype=np.int64)
    rows = np.flatnonzero(usable)
    rows = rows[_training_rows(labels_all[rows], np.random.default_rng(0))]
    data = np.asarray(vectors[rows], dtype=np.float32)
    labels = labels_all[rows]
    folds = np.array([zlib.crc32(str(groups[r]).encode()) % FOLDS for r in rows])
    scores = {}
    for regularisation in REGULARISATION_GRID:
        accuracies = []
        for fold in range(FOLDS):
            held = folds == fold
            if held.all() or not held.any():
                continue
            weights, bias = _fit(data[~held], labels[~held], len(known), regularisation)
            accuracies.append(_accuracy(weights, bias, data[held], labels[held]))
        scores[regularisation] = float(np.mean(accuracies)) if accuracies else 0.0
    best = max(REGULARISATION_GRID, key=lambda r: (scores[r], -r))
    weights, bias = _fit(data, labels, len(known), best)
    log.info(
        "category probe: %d categories, %d images, cross-validated accuracy %.3f",
        len(known),
        len(rows),
        scores[best],
    )
    return CategoryProbe(tuple(known), weights, bias, best, scores[best])


def neighbour_votes(
    categories: Sequence[str], scores: Sequence[float], temperature: float = 0.05
) -> dict[str, float]:
    """Similarity-weighted category shares of the nearest products (softmax weights)."""
    if not categories:
        return {}
    weights = np.exp((np.asarray(scores, dtype=np.float64) - max(scores)) / temperature)
    votes: dict[str, float] = {}
    for category, weight in zip(categories, weights, strict=True):
        if category:
            votes[category] = votes.get(category, 0.0) + float(weight)
    total = sum(votes.values()) or 1.0
    return {c: v / total for c, v in votes.items()}


def combined_shares(
    probe_shares: dict[str, float], vote_shares: dict[str, float], minimum: float
) -> dict[str, float]:
    """Each category's average share among the predictors that spoke; empty when none did
    or when no category reaches `minimum` (too unsure to reorder anything)."""
    spoke = [shares for shares in (probe_shares, vote_shares) if shares]
    combined: dict[str, float] = {}
    for shares in spoke:
        for category, share in shares.items():
            combined[category] = combined.get(category, 0.0) + share / len(spoke)
    if not combined or max(combined.values()) < minimum:
        return {}
    return combined
