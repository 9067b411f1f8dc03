"""Joining per-sample tables by sample_id, never by row position.

The tables later stages join to the face cache (soft labels, auxiliary vectors, the
neighbour graph) each carry the sample_id of every row. A reader aligns them to the face
cache's order: the same samples in another order are put back in the cache's order (the
id says which sample a row belongs to, so the join is unambiguous); ids the cache does
not hold, or cache samples the table should cover and does not, are refused, since the
two files then come from different data and no order would make them agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightfer.errors import StageOutputError

__all__ = ["align_to_cache"]

_EXAMPLES = 3


def _examples(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:_EXAMPLES])
    return shown + (", ..." if len(ids) > _EXAMPLES else "")


def align_to_cache(
    table_ids: Sequence[str],
    cache_ids: Sequence[str],
    *,
    table: Path,
    cache: Path,
    required: np.ndarray | None = None,
) -> np.ndarray:
    """Where each face-cache row's sample is in a table: positions in cache order.

    Args:
        table_ids: the table's sample_id per row.
        cache_ids: the face cache's sample_id per row.
        table: the table's file (for messages).
        cache: the face cache's folder (for messages).
        required: `(len(cache_ids),)` bool, the cache rows the table must cover; None:
            every row.

    Returns:
        `(len(cache_ids),)` int64: the table row of each cache row's sample, -1 where the
        table does not hold it (only where not `required`).

    Raises:
        StageOutputError: a sample_id repeats in the table, the table holds samples the
            cache does not, or a required cache row is missing from it.
    """
    table_ids = [str(i) for i in table_ids]
    position = {sample: row for row, sample in enumerate(table_ids)}
    hint = f"re-run the stage that writes {table.name}"
    if len(position) != len(table_ids):
        raise StageOutputError(
            f"{table} repeats sample_ids, so it cannot be joined to the face cache {cache}; {hint}"
        )
    extra = sorted(set(position) - set(map(str, cache_ids)))
    if extra:
        raise StageOutputError(
            f"{table} holds {len(extra)} sample_ids that the face cache {cache} does not "
            f"({_examples(extra)}): they come from different data; {hint}"
        )
    positions = np.array([position.get(str(i), -1) for i in cache_ids], dtype=np.int64)
    wanted = np.ones(len(positions), bool) if required is None else np.asarray(required, bool)
    missing = [str(cache_ids[row]) for row in np.flatnonzero(wanted & (positions < 0))]
    if missing:
        raise StageOutputError(
            f"{table} has no row for {len(missing)} samples of the face cache {cache} "
            f"({_examples(missing)}): they come from different data; {hint}"
        )
    return positions
