"""Rewrite a face cache with its rows in another order, as a re-run of align might."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightfer.faces.cache import CACHE_FILE, TABLE_FILE


def reorder_face_cache(directory: Path, order: np.ndarray) -> None:
    """Row i of the rewritten cache is row `order[i]` of the old one (`row` renumbered)."""
    crops = np.load(directory / CACHE_FILE)
    table = pq.read_table(directory / TABLE_FILE).take(pa.array(order))
    rows = table.schema.get_field_index("row")
    table = table.set_column(rows, "row", pa.array(np.arange(len(order)), pa.int64()))
    np.save(directory / CACHE_FILE, crops[order])
    pq.write_table(table, directory / TABLE_FILE)
