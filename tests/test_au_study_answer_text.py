"""The report's answer paragraph reads the study's intervals the right way round."""

from __future__ import annotations

from typing import Any

from lightfer.report import au_study_answer, gain_citation

REFERENCE = {"space": "oracle", "noise": 0.0, "source": "ldg", "lambda": 1.0, "k": 8}


def _gain(mean: float, half: float, mde: float = 1.0) -> dict[str, Any]:
    return {
        "accuracy": {
            "mean_difference": mean,
            "ci_low": mean - half,
            "ci_high": mean + half,
            "mde": mde,
        }
    }


def _result(clean: float, noisy: float, bank: float = 0.0) -> dict[str, Any]:
    """LDL, the clean reference AU arm, a noise-3 arm and a bank-source arm; half-width 0.5."""
    arms = {
        "ldl": {"setup": {"regime": "ldl"}},
        "ldl_au": {"setup": {"regime": "ldl_au", **REFERENCE}},
        "noise3": {"setup": {"regime": "ldl_au", **REFERENCE, "noise": 3.0}},
        "bank": {"setup": {"regime": "ldl_au", **REFERENCE, "source": "bank"}},
        "sll": {"setup": {"regime": "sll"}},
    }
    comparisons = {
        "ldl over sll": {"baseline": "sll", "arm": "ldl"} | _gain(5.0, 0.5),
        "AU term": {"baseline": "ldl", "arm": "ldl_au"} | _gain(clean, 0.5),
        "AU noise 3": {"baseline": "ldl", "arm": "noise3"} | _gain(noisy, 0.5),
        "source bank": {"baseline": "ldl", "arm": "bank"} | _gain(bank, 0.5),
    }
    return {"arms": arms, "comparisons": comparisons}


def test_a_citation_is_the_mean_its_interval_and_the_mde():
    entry = _gain(-0.456, 0.5, mde=1.234)
    assert gain_citation("x", entry) == "`x` -0.46 [-0.96, +0.04] (MDE 1.23)"


def test_a_term_that_helps_only_with_clean_aus_supports_the_paper():
    text = au_study_answer(_result(clean=1.5, noisy=0.2))
    assert "`AU term` +1.50 [+1.00, +2.00] (MDE 1.00), helps." in text
    assert "`AU noise 3` +0.20" in text
    assert "consistent with the paper's explanation" in text
    assert "1 help (AU term) and 0 hurt" in text  # ldl over sll is not an AU variant


def test_a_term_that_does_not_help_with_clean_aus_refutes_noise_as_the_whole_reason():
    text = au_study_answer(_result(clean=0.1, noisy=-1.0, bank=-2.0))
    assert "`AU term` +0.10 [-0.40, +0.60] (MDE 1.00), no effect resolved" in text
    assert "noisy automatic AUs cannot be the whole reason" in text
    assert "0 help and 2 hurt (AU noise 3, source bank)" in text


def test_a_term_that_helps_even_with_noise_says_so():
    text = au_study_answer(_result(clean=1.5, noisy=1.2))
    assert "helps here even with noisy AUs" in text


def test_no_clean_reference_arm_gives_no_answer():
    result = _result(clean=1.0, noisy=0.0)
    del result["comparisons"]["AU term"]
    assert au_study_answer(result) == ""
