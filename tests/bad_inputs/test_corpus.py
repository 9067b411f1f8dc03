"""Run the bad-input corpus (`corpus.CASES`): every input named, counted or refused."""

from __future__ import annotations

import re

import pytest

from tests.bad_inputs.corpus import CASES, Assets, Case, by_kind, totals


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    return Assets(tmp_path_factory.mktemp("assets"))


@pytest.mark.parametrize(
    "case",
    # Signals need a child process that is killed part-way: seconds each, so the slow tier.
    [pytest.param(c, marks=pytest.mark.slow) if c.kind == "signal" else c for c in CASES],
    ids=[case.id for case in CASES],
)
def test_bad_input(case: Case, tmp_path, assets, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = case.run(tmp_path, assets)
    assert not outcome.traceback, outcome.message
    assert "Traceback" not in outcome.message, outcome.message
    if case.expect == "counted":
        assert not outcome.failed, f"expected a counted skip, got: {outcome.message}"
        lines = outcome.lines()
        assert any(re.search(case.pattern, line) for line in lines), lines
    else:
        assert outcome.failed, f"expected {case.expect}, but it was accepted: {outcome.lines()}"
        assert re.search(case.pattern, outcome.message), outcome.message


def test_the_corpus_is_of_record(capsys):
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids)
    counts = totals()
    assert counts["tried"] >= 80
    assert counts["tried"] == counts["clear"] + counts["counted"] + counts["refused"]
    with capsys.disabled():
        print(f"\nbad-input corpus: {counts}; by kind: {by_kind()}")
