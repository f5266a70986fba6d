"""The supervised detector's head: a fit that does not depend on the machine it runs on."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from provenance.detectors.supervised import MLPHead


def test_the_head_is_the_same_whatever_threads_blas_is_allowed() -> None:
    """More BLAS threads split every sum differently, and the fit amplifies the last bits
    (measured on the labelled files: 1e-7 on the inputs moved log-odds by up to 0.9), so a
    16-core server trained another head than a laptop from the same data and seed."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 100))  # the size of the shipped training set
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=len(x)) > 0).astype(int)
    heads = {}
    for threads in (1, 2, 4):
        with threadpool_limits(threads):
            heads[threads] = MLPHead.fit(x, y, alpha=1.0).tensors()
    for threads in (2, 4):
        for name, weights in heads[1].items():
            assert np.array_equal(heads[threads][name], weights), (threads, name)
