"""The category probe's training (engine/category.py): what it learns is tested with the
real model (tests/engine/test_real_model.py); here, how it runs."""

from __future__ import annotations

import numpy as np
import torch

from engine import category


def clustered(rows: int, classes: int, dim: int = 64) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dim))
    vectors = centres[np.arange(rows) % classes] + rng.normal(size=(rows, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), [f"category-{i % classes}" for i in range(rows)]


def test_the_probe_trains_on_one_thread_and_gives_the_threads_back(monkeypatch) -> None:
    seen: list[int] = []
    real_fit = category._fit

    def fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(category, "_fit", fit)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        vectors, labels = clustered(300, 3)
        probe = category.train_probe(vectors, labels, [str(i) for i in range(300)])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert probe is not None and probe.cross_validated_accuracy > 0.9
    assert seen and set(seen) == {1}  # every fit: 3 folds x 3 strengths, then the final one
    assert len(seen) == len(category.REGULARISATION_GRID) * category.FOLDS + 1
