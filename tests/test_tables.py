"""The one Markdown table renderer and its cell formats."""

from __future__ import annotations

import subprocess
import sys

from lightfer.tables import NONE, markdown_table, num, pct, spread, study_table
from tests.conftest import PROJECT_ROOT


def test_markdown_table_writes_every_cell_as_text():
    text = markdown_table(["a", "b"], [[1, "x"], [None, 2.5]])
    assert text == "| a | b |\n|---|---|\n| 1 | x |\n| None | 2.5 |"


def test_cells_share_one_convention():
    assert num(0.12345, 3) == "0.123" and num(None, 3) == NONE
    assert pct(0.5) == "50.00" and pct(-0.0125, sign=True) == "-1.25"
    entry = {"min": 0.4, "median": 0.45, "max": 0.5}
    assert spread(entry) == "40.00 / 45.00 / 50.00"
    assert spread(entry, 3, 1.0) == "0.400 / 0.450 / 0.500"
    assert spread(None) == NONE


def test_study_table_marks_plain_ldl_and_its_gain():
    accuracy = {"min": 0.5, "median": 0.5, "max": 0.5}
    rows = [
        {"aux": "none (ldl)", "noise": None, "runs": 1, "accuracy": accuracy},
        {
            "aux": "oracle",
            "noise": 0.5,
            "runs": 1,
            "label_agreement": 0.7,
            "chance_agreement": 0.2,
            "accuracy": accuracy | {"median": 0.52, "max": 0.54},
        },
    ]
    text = study_table("synthetic", rows)
    assert "| ldl | none (ldl) | – | 1 | – | 50.00 / 50.00 / 50.00 | – | – | – |" in text
    assert "| ldl_au | oracle | 0.5 | 1 | 0.700 (0.200) | 50.00 / 52.00 / 54.00 | +2.00 |" in text


def test_importing_the_tables_loads_no_numeric_stack():
    code = (
        "import sys, lightfer.tables; "
        "print(sorted(m for m in ('numpy', 'torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
