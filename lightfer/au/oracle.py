"""The `oracle` backend: the synthetic dataset's true AU intensities plus Gaussian noise.

It emulates an AU annotator of known quality, so the AU-neighbour term can be tried with
clean AUs and with AUs as noisy as an automatic tool's (the paper blamed noisy automatic
annotations for the term's lack of gain on RAF-DB and FER+). Noise is in AU intensity units
on OpenFace's 0-5 scale (for scale: the synthetic AUs' per-dimension standard deviations
are about 0.3-1.4); noisy values are not clipped, as a clipped annotator would be a
different, biased one.
"""

from __future__ import annotations

import numpy as np

from lightfer.au import OK, AuxVectors
from lightfer.errors import AuxLabelError

__all__ = ["oracle_aux"]


def oracle_aux(
    true_aus: np.ndarray | None,
    names: tuple[str, ...],
    *,
    noise: float,
    seed: int,
    ok: np.ndarray | None = None,
) -> AuxVectors:
    """True AUs plus `N(0, noise^2)` per value, drawn from `seed`.

    Args:
        true_aus: `(N, D)` true intensities (the manifest's `aus` column), or None.
        names: the AU names, e.g. `("AU01_r", ...)`.
        noise: standard deviation of the added noise (0: the true AUs).
        seed: seed of the noise.
        ok: rows whose face is usable; the others get status `face_not_usable`.

    Raises:
        AuxLabelError: there are no true AUs (only the synthetic dataset has them).
    """
    if true_aus is None:
        raise AuxLabelError(
            "the oracle backend needs true AUs (the manifest's 'aus' column), which only the "
            "synthetic dataset has; choose aux.backend: geometry for real photos"
        )
    values = np.asarray(true_aus, dtype=np.float64)
    if noise > 0:
        values = values + np.random.default_rng(seed).normal(0.0, noise, size=values.shape)
    status = np.full(len(values), OK, dtype=object)
    if ok is not None:
        status[~np.asarray(ok, dtype=bool)] = "face_not_usable"
    return AuxVectors(backend="oracle", names=tuple(names), values=values, status=status)
