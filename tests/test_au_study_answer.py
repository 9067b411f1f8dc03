"""The README's answer to "does the AU term help?" quotes the committed study's numbers.

The answer paragraph cites each comparison as `` `name` +g.gg [+l.ll, +h.hh] (MDE m.mm) ``,
in points, as `studies/au/reports/au_study/au_study.json` has them to two decimals, and the
references as "the LDG's NN.NN%", "the true AUs' NN.NN%" and "LDL NN.NN%". A study re-run
that moves a number, or a README edit that mistypes one, fails here.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import PROJECT_ROOT

STUDY_JSON = PROJECT_ROOT / "studies/au/reports/au_study/au_study.json"
SECTION = "## Does the AU term help?"
NUMBER = r"([+-]?\d+\.\d{2})"
GAIN = re.compile(rf"`([^`]+)` {NUMBER} \[{NUMBER}, {NUMBER}\] \(MDE {NUMBER}\)")
# The comparisons the answer must state: the paper's term, and the noise dose-response ends.
REQUIRED = (
    "AU term (ldg, lambda 1, K 8, noise 0)",
    "true distributions over ldl",
    "AU term on hard labels",
    "AU noise 3",
)


@pytest.fixture(scope="module")
def study() -> dict:
    return json.loads(STUDY_JSON.read_text())


@pytest.fixture(scope="module")
def answer() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    return " ".join(readme[start : end if end != -1 else None].split())  # lines rewrap


def _two(value: float) -> float:
    return round(value + 0.0, 2)


def test_every_gain_the_answer_cites_is_the_study_s(study, answer):
    cited = GAIN.findall(answer)
    assert {name for name, *_ in cited} >= set(REQUIRED), cited
    for name, mean, low, high, mde in cited:
        assert name in study["comparisons"], f"{name!r} is not a comparison of the study"
        gain = study["comparisons"][name]["accuracy"]
        quoted = tuple(float(x) for x in (mean, low, high, mde))
        actual = tuple(_two(gain[k]) for k in ("mean_difference", "ci_low", "ci_high", "mde"))
        assert quoted == actual, f"{name}: README says {quoted}, the study {actual}"


def test_the_references_the_answer_cites_are_the_study_s(study, answer):
    refs = study["references"]
    ldl = study["arms"]["ldl"]["accuracy"]["mean"]
    for pattern, value in (
        (r"the LDG's (\d+\.\d{2})%", refs["ldg_accuracy"]),
        (r"the true AUs' (\d+\.\d{2})%", refs["true_au_logistic_accuracy"]),
        (r"LDL (\d+\.\d{2})%", ldl),
    ):
        found = re.search(pattern, answer)
        assert found, f"the answer does not cite {pattern}"
        assert float(found.group(1)) == _two(value), (pattern, found.group(1), value)


def test_the_answer_states_the_design_it_ran(study, answer):
    design = study["design"]
    assert f"{len(design['seeds'])} seeds" in answer
    assert f"{design['test_faces']:,} test faces" in answer
