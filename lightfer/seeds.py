"""Seeds derived from keys, so that a draw depends on what it is for and nothing else."""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed"]


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends only on `keys` (e.g. `(seed, epoch, batch)`)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])
