"""Reading the AU study's result (`au_study.json`): which comparisons measure the AU term
over LDL, which arm is the clean reference, and which arms trace the noise curve.

Torch-free: the main report reads the study through it without the training code, and the
study's figure and the report's answer cannot disagree on which arm is which.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["REFERENCE_AU_ARM", "au_gains_over_ldl", "is_reference_au_arm", "noise_curve"]

# The AU arm the paper describes, with clean AUs: every other AU arm changes one thing.
REFERENCE_AU_ARM = {"space": "oracle", "noise": 0.0, "source": "ldg", "lambda": 1.0, "k": 8}

Setup = Mapping[str, Any]
Comparison = Mapping[str, Any]


def is_reference_au_arm(setup: Setup, but: str | None = None) -> bool:
    """Whether an AU arm's setup is the reference one, except perhaps in `but`."""
    return all(setup[key] == value for key, value in REFERENCE_AU_ARM.items() if key != but)


def au_gains_over_ldl(result: Mapping[str, Any]) -> dict[str, tuple[Setup, Comparison]]:
    """The comparisons of an `ldl_au` arm with an `ldl` baseline: name -> (the arm's setup,
    the comparison), in the study's order."""
    arms = result["arms"]
    return {
        name: (arms[entry["arm"]]["setup"], entry)
        for name, entry in result["comparisons"].items()
        if arms[entry["baseline"]]["setup"]["regime"] == "ldl"
        and arms[entry["arm"]]["setup"]["regime"] == "ldl_au"
    }


def noise_curve(gains: Mapping[str, tuple[Setup, Comparison]]) -> list[tuple[float, str]]:
    """`(noise, name)` of the oracle arms that differ from the reference in noise only (the
    reference included), by noise: the dose-response curve."""
    return sorted(
        (setup["noise"], name)
        for name, (setup, _) in gains.items()
        if is_reference_au_arm(setup, but="noise")
    )
