"""The AU study's own pipeline (studies/au/), end to end on a tiny copy of its params.

`dvc repro studies/au/dvc.yaml` runs every stage in the study's folder, and the report
holds a paired difference with an interval and a minimum detectable effect for every
configured comparison; a second repro runs nothing. The committed study's report and the
README's answer are checked in tests/test_au_study_answer.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lightfer.errors import ParamsError
from lightfer.params import load_params
from tests.conftest import PROJECT_ROOT
from tests.test_pipeline import ENV

STUDY = Path("studies/au")
# Six arms that cover every code path between them: each regime, each neighbour source
# (ldg, bank, batch), the clean and a noisy oracle, and a landmark space.
ARMS = {
    "sll": {"regime": "sll"},
    "ldl": {"regime": "ldl"},
    "truth": {"regime": "truth"},
    "sll_au": {"regime": "sll_au", "source": "batch"},
    "bank": {"regime": "ldl_au", "source": "bank", "noise": 1.0},
    "geometry": {"regime": "ldl_au", "space": "geometry"},
}


def _tiny_study(root: Path) -> Path:
    """A project copy whose studies/au/params.yaml is the committed one, shrunk."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("lightfer", "stages"):
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=ignore)
    shutil.copy(PROJECT_ROOT / ".dvcignore", root / ".dvcignore")
    (root / STUDY).mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / STUDY / "dvc.yaml", root / STUDY / "dvc.yaml")
    raw = yaml.safe_load((PROJECT_ROOT / STUDY / "params.yaml").read_text())
    raw["datasets"]["au_study"].update(n_train=160, n_test=60, n_subjects=40)
    raw["base"]["threads"] = 1  # the other test process has the other core
    for model in ("ldg", "ef"):
        raw["train"][model]["train"]["epochs"] = 1
    raw["knn"].update(k=4, recall_sample=50)
    study = raw["au_study"]
    study.update(seeds=[0, 1], bootstrap=200)
    study["arms"] = ARMS
    study["comparisons"] = {
        name: pair for name, pair in study["comparisons"].items() if set(pair) <= set(ARMS)
    }
    assert len(study["comparisons"]) >= 3, "the committed comparisons no longer pair these arms"
    (root / STUDY / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, env=ENV, check=True)
    return root


@pytest.mark.slow
def test_the_study_pipeline_reports_every_comparison_with_its_interval(tmp_path):
    root = _tiny_study(tmp_path / "project")
    repro = ["dvc", "repro", str(STUDY / "dvc.yaml")]
    proc = subprocess.run(repro, cwd=root, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ran = re.findall(r"Running stage '[^:]+:([^']+)'", proc.stdout)
    assert {f"arm@{name}" for name in ARMS} | {"targets", "compare"} <= set(ran)

    reports = root / STUDY / "reports" / "au_study"
    result = json.loads((reports / "au_study.json").read_text())
    params = load_params(root / STUDY / "params.yaml")
    assert set(result["comparisons"]) == set(params.au_study.comparisons)
    for name, entry in result["comparisons"].items():
        gain = entry["accuracy"]
        assert gain["ci_low"] <= gain["mean_difference"] <= gain["ci_high"], name
        assert gain["mde"] >= 0 and len(gain["per_seed"]) == 2, name
    assert result["design"]["test_faces"] == 60
    table = (reports / "au_study.md").read_text()
    assert all(name in table for name in params.au_study.comparisons)
    assert (reports / "au_study_gain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    targets = json.loads((reports / "targets.json").read_text())["rows"]
    assert {row["space"] for row in targets} == {"oracle@0", "oracle@1", "geometry"}

    again = subprocess.run(repro, cwd=root, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout


def test_a_comparison_naming_an_unknown_arm_is_refused_with_the_arms(tmp_path):
    raw = yaml.safe_load((PROJECT_ROOT / STUDY / "params.yaml").read_text())
    raw["au_study"]["comparisons"]["typo"] = ["ldl", "ldl_auu"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"comparisons.typo: ldl_auu is not an arm"):
        load_params(path)


def test_an_arm_name_with_a_dot_is_refused_before_dvc_misreads_it(tmp_path):
    raw = yaml.safe_load((PROJECT_ROOT / STUDY / "params.yaml").read_text())
    raw["au_study"]["arms"]["lambda0.3"] = {"regime": "ldl_au", "lambda": 0.3}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=r"arm 'lambda0.3'.*e\.g\. 'lambda0_3'"):
        load_params(path)


def test_the_committed_study_params_are_valid_and_pair_every_arm():
    params = load_params(PROJECT_ROOT / STUDY / "params.yaml")
    study = params.au_study
    assert len(study.seeds) >= 5
    assert params.datasets[study.dataset].n_test >= 3000
    compared = {arm for pair in study.comparisons.values() for arm in pair}
    assert compared == set(study.arms)
