"""Joining tables to the face cache by sample_id: realigned when reordered, else refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightfer.errors import StageOutputError
from lightfer.sample_ids import align_to_cache

TABLE, CACHE = Path("data/x/soft_labels.parquet"), Path("data/x/faces")


def test_the_same_samples_in_another_order_are_realigned():
    positions = align_to_cache(["c", "a", "b"], ["a", "b", "c"], table=TABLE, cache=CACHE)
    np.testing.assert_array_equal(positions, [1, 2, 0])


def test_rows_the_table_need_not_cover_are_marked_absent():
    required = np.array([True, False, True])
    positions = align_to_cache(
        ["c", "a"], ["a", "b", "c"], table=TABLE, cache=CACHE, required=required
    )
    np.testing.assert_array_equal(positions, [1, -1, 0])


@pytest.mark.parametrize(
    ("table_ids", "message"),
    [
        (["a", "b"], r"has no row for 1 samples of the face cache data/x/faces \('c'\)"),
        (["a", "b", "c", "d"], r"holds 1 sample_ids that the face cache data/x/faces does not"),
        (["a", "a", "b", "c"], r"repeats sample_ids, so it cannot be joined to the face cache"),
    ],
)
def test_other_samples_are_refused_naming_both_files(table_ids, message):
    with pytest.raises(StageOutputError, match=message) as refused:
        align_to_cache(table_ids, ["a", "b", "c"], table=TABLE, cache=CACHE)
    assert str(TABLE) in str(refused.value)
