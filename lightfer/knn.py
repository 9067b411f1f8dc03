"""The AU-space neighbour graph: approximate K nearest neighbours with NGT, and edge weights.

Training pulls each image's prediction toward those of its K nearest neighbours in Action
Unit space, weighted by `a_ij = exp(-d_ij / sigma^2)` (docs/method.md, eq. 5). The lists are
computed once, offline: `standardise` the AU vectors, put them in `locality_order`,
`build_index` (an NGT ANNG graph on disk), `query_neighbours` for every point with the
point itself excluded (`approximate_neighbours` does these three), `edge_weights`, and keep
the result as a `NeighbourGraph` (one `.npz`). `build_graph` does all of that and checks
recall@K against exact search (`exact_neighbours`) on a random sample.

NGT notes (ngt 2.8, `import ngtpy`; measured on this project's shared 2-core machines, whose
speed varied by 2x with the other work on them; figures are CPU seconds):

- Distances are Euclidean (L2), not squared; `exact_neighbours` returns the same quantity.
- Determinism. NGT seeds every search with the objects of the DVP-tree leaf nearest to the
  query, thinned to `SeedSize` (10) with the process-global `srand()`/`rand()`.
  `batch_search` runs queries in OpenMP threads that race on that generator: two identical
  batch searches of one index differed in 1e-4 to 1e-3 of the neighbour lists. ngtpy has
  no setter for the seed type, so `build_index` writes `SeedType AllLeafNodes` (every
  object of the leaf is a seed, no random numbers) into the index's property file before
  inserting. With it, builds with 1, 2 or 3 threads and repeated batch searches gave
  identical lists, and recall was unchanged.
- `LeafNodeSize` 20 (NGT's default is 100): with all leaf objects as seeds, smaller leaves
  mean fewer seed distances per search. On 100k x 17 clustered points it cut build CPU
  time by about 30 % and query time by about 30 % at the same recall.
- Memory locality dominates: a search computes only a few hundred distances, yet took
  30 us per query in a 10k-point index and 140 us in a 150k one, the difference being
  cache misses. Inserting the points in `locality_order` (so that object ids, and thus
  memory, follow space) cut the build of 100k x 17 clustered points from 15 to 7 CPU s and
  the all-points query from 13 to 5, and raised recall@8 from 0.94 to 0.96.
- Edge sizes: see `EDGE_SIZE_FOR_CREATION`, `EDGE_SIZE_FOR_SEARCH`, `EDGE_SIZE_FOR_QUERY`.
- Per query, `batch_search` and a Python loop over `search` cost about the same (140 us
  in a 150k-point index), but only `batch_search` runs queries in parallel (OpenMP; ngtpy
  holds the GIL). Its thread count is set from `threads` through the OpenMP runtime that
  ships inside the ngt wheel.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import ngtpy
import numpy as np

from lightfer.au import OK, AuxVectors
from lightfer.au.analysis import neighbour_agreement
from lightfer.errors import StageOutputError
from lightfer.io import atomic_path
from lightfer.params import KnnParams
from lightfer.sample_ids import align_to_cache
from lightfer.splits import Splits

logger = logging.getLogger(__name__)

__all__ = [
    "EDGE_SIZE_FOR_CREATION",
    "EDGE_SIZE_FOR_QUERY",
    "EDGE_SIZE_FOR_SEARCH",
    "GRAPH_FORMAT",
    "GRAPH_VERSION",
    "KERNELS",
    "NeighbourGraph",
    "approximate_neighbours",
    "build_graph",
    "build_index",
    "edge_weights",
    "exact_neighbours",
    "locality_order",
    "query_neighbours",
    "read_graph",
    "recall_at_k",
    "standardise",
    "training_graph",
    "write_graph",
]

EDGE_SIZE_FOR_CREATION = 10
"""Edges each new object gets to its nearest earlier objects while the ANNG is built (NGT's
default). Build time grows about linearly with it; on 100k x 17 clustered points (random
order) 5 halved the build but cost 0.17 of recall@8, 15 gained 0.02 for 1.6x the time."""

EDGE_SIZE_FOR_SEARCH = 20
"""The index's default number of edges followed from each visited object (NGT's default is
40). It also bounds the searches that find each new object's edges during the build: on
284k x 17 clustered points in `locality_order`, building with 20 took 31 CPU s and with 40
57 s, and the graph built with 20 reached recall@8 0.955 at query edge size 40 and
epsilon 0.1 (48 s of query) where the one built with 40 needed 0.08 and 57 s."""

EDGE_SIZE_FOR_QUERY = 40
"""Edges followed from each visited object in the all-points query (see
`EDGE_SIZE_FOR_SEARCH`). On 284k x 17 points, at epsilon 0.1: 20 gave recall@8 0.931 (31 CPU
s), 40 gave 0.955 (48 s); reaching 0.96 at 20 took epsilon 0.15 and 67 s."""

KERNELS = ("exp", "gaussian", "uniform")
GRAPH_FORMAT = "lightfer.neighbour_graph"
GRAPH_VERSION = 1

# Written into the NGT property file before inserting; see the module docstring.
_NGT_PROPERTIES = {"SeedType": "AllLeafNodes", "LeafNodeSize": "20"}
# `locality_order`: principal components used, and bits (levels = 2**bits) for each.
_ORDER_COMPONENTS = 6
_ORDER_BITS = 5


def _as_points(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    """`vectors` as a C-contiguous float32 (N, D) array; NaN or infinite rows are an error."""
    points = np.ascontiguousarray(vectors, dtype=np.float32)
    if points.ndim != 2 or points.shape[0] == 0 or points.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array, got shape {points.shape}")
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        where = np.flatnonzero(bad)
        raise ValueError(
            f"{name} has {where.size} rows with NaN or infinite values (positions "
            f"{where[:5].tolist()}{'...' if where.size > 5 else ''}); pass only valid rows"
        )
    return points


def standardise(
    vectors: np.ndarray, *, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score each dimension, so that no AU dominates the distance by its scale alone.

    Args:
        vectors: (N, D) points; NaN rows are an error (pass only the valid rows).
        mean: per-dimension mean to use instead of the data's (e.g. the training split's).
        std: per-dimension standard deviation to use instead of the data's. A dimension
            whose standard deviation is 0 (constant, e.g. an AU a backend never fires) is
            divided by 1 instead, so it becomes all zeros rather than NaN.

    Returns:
        `(z, mean, std)`: `z` float32 (N, D); `mean` and `std` float64 (D,), with the zeros
        of `std` already replaced by 1.

    Raises:
        ValueError: `vectors` is not a finite 2-D array, or `mean`/`std` have the wrong shape.
    """
    points = _as_points(vectors).astype(np.float64)
    dim = points.shape[1]
    mean = points.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
    std = points.std(axis=0) if std is None else np.asarray(std, dtype=np.float64)
    if mean.shape != (dim,) or std.shape != (dim,):
        raise ValueError(f"mean and std must have shape ({dim},), got {mean.shape} and {std.shape}")
    std = np.where(std > 0, std, 1.0)
    z = ((points - mean) / std).astype(np.float32)
    return z, mean, std


def _set_ngt_properties(index_path: Path, values: dict[str, str]) -> None:
    """Overwrite entries of an NGT index's property file (`prf`, tab-separated key, value)."""
    prf = index_path / "prf"
    lines = prf.read_text().splitlines()
    found = set()
    for number, line in enumerate(lines):
        key = line.partition("\t")[0]
        if key in values:
            lines[number] = f"{key}\t{values[key]}"
            found.add(key)
    missing = sorted(set(values) - found)
    if missing:
        raise RuntimeError(
            f"NGT property file {prf} has no entry {missing}: the installed ngt writes a "
            "different index format than the 2.8 series lightfer.knn was written for"
        )
    prf.write_text("\n".join(lines) + "\n")


def build_index(
    vectors: np.ndarray,
    path: Path,
    *,
    threads: int,
    edge_size_for_creation: int = EDGE_SIZE_FOR_CREATION,
    edge_size_for_search: int = EDGE_SIZE_FOR_SEARCH,
) -> ngtpy.Index:
    """Build an NGT graph index (ANNG, L2) of `vectors` in the directory `path`, atomically.

    The index is built in a hidden temporary sibling and renamed to `path` when complete
    (an existing index there is replaced). Object ids are positions in `vectors`.

    Args:
        vectors: (N, D) points, finite.
        path: directory of the index.
        threads: threads searching for the new objects' edges during insertion. The built
            graph does not depend on it (checked for 1, 2 and 3).
        edge_size_for_creation: see `EDGE_SIZE_FOR_CREATION`.
        edge_size_for_search: see `EDGE_SIZE_FOR_SEARCH`; `query_neighbours` overrides it.

    Returns:
        The index, reopened from `path`. Not read-only: NGT's read-only search (a separate
        implementation, about 15 % faster) missed a true neighbour that the ordinary search
        found, even at epsilon 5 (300 x 5 points, `LeafNodeSize` 20).
    """
    points = _as_points(vectors)
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    path = Path(path)
    with atomic_path(path) as tmp:
        ngtpy.create(
            str(tmp),
            points.shape[1],
            edge_size_for_creation=edge_size_for_creation,
            edge_size_for_search=edge_size_for_search,
            distance_type="L2",
            object_type="Float",
            graph_type="ANNG",
        )
        _set_ngt_properties(tmp, _NGT_PROPERTIES)
        index = ngtpy.Index(str(tmp), log_disabled=True)
        try:
            index.batch_insert(points, num_threads=threads)
            index.save()
        finally:
            index.close()
    return ngtpy.Index(str(path), log_disabled=True)


def _ngt_openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime bundled in the ngt wheel (the one `batch_search` uses), if found."""
    libs = Path(ngtpy.__file__).parent / "ngt.libs"
    for candidate in sorted(libs.glob("libgomp*.so*")):
        try:
            return ctypes.CDLL(str(candidate))
        except OSError:
            continue
    return None


@contextlib.contextmanager
def _openmp_threads(threads: int) -> Iterator[None]:
    """Run the block with `threads` OpenMP threads in ngt's runtime, then restore the count.

    Without it `batch_search` uses every core (or OMP_NUM_THREADS). Where the runtime
    cannot be found (another packaging of ngt) the block runs with OpenMP's default.
    """
    runtime = _ngt_openmp()
    if runtime is None:
        logger.debug("ngt's OpenMP runtime not found; batch_search uses OpenMP's default")
        yield
        return
    previous = runtime.omp_get_max_threads()
    runtime.omp_set_num_threads(threads)
    try:
        yield
    finally:
        runtime.omp_set_num_threads(previous)


def locality_order(vectors: np.ndarray) -> np.ndarray:
    """A permutation of the points that keeps points near in space near in the sequence.

    The points are projected on their first 6 principal components (fitted on every
    (N // 10000)-th point), each quantised to 32 levels, and sorted by the Morton code
    (Z-order curve) of those levels; ties keep their input order. 3 components ordered
    100k x 17 clustered points a little worse and 10 no better. Deterministic for the same
    input on the same machine.

    Returns:
        (N,) int64 permutation: `vectors[order]` is the reordered array.
    """
    points = _as_points(vectors).astype(np.float64)
    n, dim = points.shape
    centred = points - points.mean(axis=0)
    _, _, components = np.linalg.svd(centred[:: max(1, n // 10_000)], full_matrices=False)
    used = min(_ORDER_COMPONENTS, dim)
    projected = centred @ components[:used].T
    low, high = projected.min(axis=0), projected.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    levels = 2**_ORDER_BITS
    cells = np.minimum(((projected - low) / span * levels).astype(np.int64), levels - 1)
    code = np.zeros(n, dtype=np.int64)
    for bit in range(_ORDER_BITS - 1, -1, -1):
        for component in range(used):
            code = (code << 1) | ((cells[:, component] >> bit) & 1)
    return np.argsort(code, kind="stable").astype(np.int64)


def _exclude_self(ids: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop each query's own id from its K+1 results, keeping order.

    Row i of `ids` holds the K+1 nearest objects found for object i, nearest first. The
    rule: if i is among them, its (first) occurrence is dropped; otherwise the last entry
    is. The second case arises when more than K other objects are exact duplicates of i:
    they all tie with i at distance 0 and the search may return K+1 of them without i.
    Either way the row keeps K objects other than i, the nearest that were found.
    """
    n, size = ids.shape
    is_self = ids == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), size - 1)
    keep = np.ones(ids.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    return ids[keep].reshape(n, size - 1), distances[keep].reshape(n, size - 1)


def query_neighbours(
    index: ngtpy.Index,
    vectors: np.ndarray,
    k: int,
    *,
    epsilon: float,
    threads: int,
    edge_size: int | None = EDGE_SIZE_FOR_QUERY,
) -> tuple[np.ndarray, np.ndarray]:
    """The K approximate nearest neighbours of every indexed point, the point itself excluded.

    Asks NGT for K+1 results per point and drops the point's own id (for exact duplicates
    see `_exclude_self`: if the point is not among its K+1 results, the last is dropped).

    Args:
        index: built by `build_index` from `vectors` (object id i is `vectors[i]`).
        vectors: the same (N, D) points, in the same order.
        k: neighbours per point; needs N > k.
        epsilon: NGT's search range coefficient: the search explores objects up to
            (1 + epsilon) times the current K+1-th distance. Larger is slower and closer to
            exact (100k x 17 clustered points, edge size 20: 0.05 -> recall@8 0.93,
            0.1 -> 0.965, 0.2 -> 0.996, each step about doubling the time).
        threads: OpenMP threads for the batch search.
        edge_size: edges followed per visited object (`EDGE_SIZE_FOR_QUERY`); None keeps
            the index's `edge_size_for_search`.

    Returns:
        `(indices, distances)`: (N, K) int64 positions in `vectors` and (N, K) float32 L2
        (not squared) distances, nearest first.
    """
    points = _as_points(vectors)
    n = points.shape[0]
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if n <= k:
        raise ValueError(f"need more than k={k} points to find k neighbours each, got {n}")
    objects = index.get_num_of_objects()
    if objects != n:
        raise ValueError(f"the index holds {objects} objects but {n} vectors were given")
    size = k + 1
    if edge_size is None:
        index.set(epsilon=epsilon)
    else:
        index.set(epsilon=epsilon, edge_size=edge_size)
    results = ngtpy.BatchResults()
    with _openmp_threads(threads):
        index.batch_search(points, results, size=size)
        offsets = results.get_index().astype(np.int64)
        flat_ids = results.get_indexed_ids().astype(np.int64)
        flat_distances = results.get_indexed_distances().astype(np.float32)
    counts = np.diff(offsets)
    if (counts == size).all():
        ids = flat_ids.reshape(n, size)
        distances = flat_distances.reshape(n, size)
    else:
        ids = np.empty((n, size), dtype=np.int64)
        distances = np.empty((n, size), dtype=np.float32)
        short = np.flatnonzero(counts != size)
        logger.warning(
            "NGT found fewer than %d results for %d points; searching them linearly",
            size,
            short.size,
        )
        full = np.flatnonzero(counts == size)
        take = offsets[full][:, None] + np.arange(size)
        ids[full], distances[full] = flat_ids[take], flat_distances[take]
        for position in short:
            found = index.linear_search(points[position], size=size)
            ids[position] = [object_id for object_id, _ in found]
            distances[position] = [distance for _, distance in found]
    return _exclude_self(ids, distances)


def approximate_neighbours(
    vectors: np.ndarray,
    k: int,
    *,
    epsilon: float,
    threads: int,
    index_dir: Path | None = None,
    edge_size_for_creation: int = EDGE_SIZE_FOR_CREATION,
    edge_size_for_search: int = EDGE_SIZE_FOR_SEARCH,
    edge_size_for_query: int = EDGE_SIZE_FOR_QUERY,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The K approximate nearest neighbours of every point, the point itself excluded.

    `locality_order`, then `build_index` on the reordered points, then `query_neighbours`,
    with the results mapped back to input positions.

    Args:
        vectors: (N, D) points, finite (standardise them first if their scales differ).
        k: neighbours per point; needs N > k.
        epsilon: see `query_neighbours`.
        threads: threads for building and querying the index.
        index_dir: directory to keep the NGT index in (replaced if present); a temporary
            directory, deleted afterwards, when None. Object id j of the kept index is
            input position `order[j]`; `order` is saved beside it as `<index_dir>.order.npy`.
        edge_size_for_creation: see `EDGE_SIZE_FOR_CREATION`.
        edge_size_for_search: see `EDGE_SIZE_FOR_SEARCH`.
        edge_size_for_query: see `EDGE_SIZE_FOR_QUERY`.

    Returns:
        `(positions, distances, seconds)`: (N, K) int64 input positions and (N, K) float32
        L2 distances, nearest first, and the wall-clock seconds of the steps ("order",
        "build", "query").
    """
    points = _as_points(vectors)
    started = time.perf_counter()
    order = locality_order(points)
    ordered = np.ascontiguousarray(points[order])
    ordered_at = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if index_dir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="lightfer-ngt-"))
            index_path = Path(tmp) / "index"
        else:
            index_path = Path(index_dir)
            order_file = index_path.with_name(index_path.name + ".order.npy")
            with atomic_path(order_file) as file, open(file, "wb") as handle:
                np.save(handle, order)
        index = build_index(
            ordered,
            index_path,
            threads=threads,
            edge_size_for_creation=edge_size_for_creation,
            edge_size_for_search=edge_size_for_search,
        )
        built_at = time.perf_counter()
        try:
            found, found_distances = query_neighbours(
                index, ordered, k, epsilon=epsilon, threads=threads, edge_size=edge_size_for_query
            )
        finally:
            index.close()
    queried_at = time.perf_counter()
    positions = np.empty_like(found)
    distances = np.empty_like(found_distances)
    positions[order] = order[found]
    distances[order] = found_distances
    seconds = {
        "order": ordered_at - started,
        "build": built_at - ordered_at,
        "query": queried_at - built_at,
    }
    return positions, distances, seconds


def exact_neighbours(
    vectors: np.ndarray,
    k: int,
    *,
    rows: np.ndarray | None = None,
    block_elements: int = 2**24,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact K nearest neighbours by brute force (torch, blockwise), the point itself excluded.

    Distances are computed in float64 (the matrix-product form loses too much precision in
    float32 for near ties and duplicates); each query's own column is set to infinity, so
    it is excluded even among exact duplicates. The K selected neighbours are ordered by
    (distance, position); which of several objects tied at the K-th distance are selected
    is arbitrary.

    Args:
        vectors: (N, D) points.
        k: neighbours per point; needs N > k.
        rows: positions (into `vectors`) of the points to query; all points when None.
        block_elements: distance-matrix entries computed at once (memory: 8 bytes each).

    Returns:
        `(indices, distances)`: (M, K) int64 positions and (M, K) float32 L2 distances, M
        being the number of queried points.
    """
    import torch

    points = _as_points(vectors)
    n = points.shape[0]
    if k < 1 or n <= k:
        raise ValueError(f"need 1 <= k < N, got k={k} and N={n}")
    queries = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    if queries.ndim != 1 or (queries.size and (queries.min() < 0 or queries.max() >= n)):
        raise ValueError(
            f"rows must be a 1-D array of positions in [0, {n}), got shape {queries.shape} "
            f"with values from {queries.min(initial=0)} to {queries.max(initial=0)}"
        )
    data = torch.from_numpy(points).double()
    squared = (data * data).sum(dim=1)
    out_ids = np.empty((queries.size, k), dtype=np.int64)
    out_distances = np.empty((queries.size, k), dtype=np.float32)
    block = max(1, block_elements // n)
    with torch.inference_mode():
        for start in range(0, queries.size, block):
            positions = torch.from_numpy(queries[start : start + block])
            # |x|^2 - 2 q.x ranks the points as |q - x|^2 does; |q|^2 is added back after.
            ranking = torch.addmm(squared[None, :], data[positions], data.T, alpha=-2.0)
            ranking[torch.arange(len(positions)), positions] = math.inf
            values, ids = torch.topk(ranking, k, dim=1, largest=False, sorted=False)
            values = (values + squared[positions, None]).clamp_min_(0).sqrt_().numpy()
            ids = ids.numpy()
            order = np.lexsort((ids, values), axis=1)
            out_ids[start : start + block] = np.take_along_axis(ids, order, axis=1)
            out_distances[start : start + block] = np.take_along_axis(values, order, axis=1)
    return out_ids, out_distances


def recall_at_k(approx_indices: np.ndarray, exact_indices: np.ndarray) -> float:
    """Mean over rows of |approximate ∩ exact| / K: the share of true neighbours found."""
    approx = np.asarray(approx_indices)
    exact = np.asarray(exact_indices)
    if approx.shape != exact.shape or approx.ndim != 2 or approx.size == 0:
        raise ValueError(
            f"need two non-empty (M, K) arrays of the same shape, got {approx.shape} and "
            f"{exact.shape}"
        )
    hits = (approx[:, :, None] == exact[:, None, :]).any(axis=2)
    return float(hits.mean())


def _automatic_sigma(distances: np.ndarray, kernel: str) -> float:
    """Sigma giving the median neighbour distance the weight exp(-1)."""
    median = float(np.median(distances))
    if median <= 0:  # mostly exact duplicates: use the typical non-zero distance
        positive = distances[distances > 0]
        median = float(np.median(positive)) if positive.size else 1.0
    return math.sqrt(median) if kernel == "exp" else median / math.sqrt(2.0)


def edge_weights(
    distances: np.ndarray, *, kernel: str = "exp", sigma: float | None = None
) -> tuple[np.ndarray, float | None]:
    """Edge weights a_ij from neighbour distances d_ij.

    Kernels:
        - `exp`: a_ij = exp(-d_ij / sigma^2), the paper's eq. 5 (d is L2, not squared).
        - `gaussian`: a_ij = exp(-d_ij^2 / (2 sigma^2)).
        - `uniform`: a_ij = 1 (sigma is not used).

    Args:
        distances: (N, K) neighbour distances, >= 0.
        kernel: one of `KERNELS`.
        sigma: the kernel width; None chooses it so that the median of all the neighbour
            distances, m, gets the weight exp(-1): sigma^2 = m for `exp`, sigma^2 = m^2 / 2
            for `gaussian`. When m is 0 (mostly duplicates) the median of the non-zero
            distances is used, and 1 when there are none.

    Returns:
        `(weights, sigma)`: (N, K) float32 weights in (0, 1], and the sigma used (None for
        `uniform`).
    """
    if kernel not in KERNELS:
        raise ValueError(f"Invalid kernel {kernel!r}. Only {', '.join(KERNELS)} are supported.")
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or (d.size and not (np.isfinite(d).all() and d.min() >= 0)):
        raise ValueError(f"distances must be a finite, non-negative (N, K) array, got {d.shape}")
    if kernel == "uniform":
        return np.ones(d.shape, dtype=np.float32), None
    if sigma is None:
        sigma = _automatic_sigma(d, kernel) if d.size else 1.0
    elif not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    sigma = float(sigma)
    exponent = d / sigma**2 if kernel == "exp" else d**2 / (2.0 * sigma**2)
    return np.exp(-exponent).astype(np.float32), sigma


@dataclass(frozen=True, eq=False)
class NeighbourGraph:
    """K nearest neighbours of every image in AU space, by dataset row, with edge weights.

    Attributes:
        rows: (N,) int64 dataset row of each point (unique, >= 0).
        indices: (N, K) int64 dataset rows of each point's neighbours, nearest first.
        distances: (N, K) float32 L2 distances in the (standardised) AU space.
        weights: (N, K) float32 edge weights a_ij.
        sigma: the kernel width used (None for the uniform kernel).
        kernel: one of `KERNELS`.
        k: neighbours per point.
        recall: recall@K of the approximate search on a sample, or None if not measured.
    """

    rows: np.ndarray
    indices: np.ndarray
    distances: np.ndarray
    weights: np.ndarray
    sigma: float | None
    kernel: str
    k: int
    recall: float | None = None

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {rows.shape}")
        n, k = rows.shape[0], int(self.k)
        arrays = {
            "indices": np.asarray(self.indices, dtype=np.int64),
            "distances": np.asarray(self.distances, dtype=np.float32),
            "weights": np.asarray(self.weights, dtype=np.float32),
        }
        for name, array in arrays.items():
            if array.shape != (n, k):
                raise ValueError(f"{name} must have shape ({n}, {k}), got {array.shape}")
        if rows.size and (rows.min() < 0 or np.unique(rows).size != n):
            raise ValueError("rows must be unique, non-negative dataset rows")
        if self.kernel not in KERNELS:
            raise ValueError(
                f"Invalid kernel {self.kernel!r}. Only {', '.join(KERNELS)} are supported."
            )
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "k", k)
        for name, array in arrays.items():
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @cached_property
    def _position_of_row(self) -> np.ndarray:
        """Dense table: dataset row -> position in `rows`, -1 where the row is absent."""
        size = int(self.rows.max()) + 1 if self.rows.size else 0
        table = np.full(size, -1, dtype=np.int64)
        table[self.rows] = np.arange(self.rows.size)
        return table

    def lookup(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours and edge weights of the given dataset rows (e.g. a training batch's).

        Returns:
            `(neighbour_rows, weights)`: (B, K) int64 dataset rows and (B, K) float32.

        Raises:
            StageOutputError: a row is not in the graph (it was built for other rows).
        """
        wanted = np.asarray(rows, dtype=np.int64)
        table = self._position_of_row
        inside = (wanted >= 0) & (wanted < table.size)
        positions = np.full(wanted.shape, -1, dtype=np.int64)
        positions[inside] = table[wanted[inside]]
        if (positions < 0).any():
            missing = np.unique(wanted[positions < 0])
            raise StageOutputError(
                f"{missing.size} dataset rows are not in the neighbour graph, e.g. "
                f"{missing[:5].tolist()}; the graph covers {len(self)} rows. It was built "
                "for another manifest or AU file: rebuild it with build_graph()"
            )
        return self.indices[positions], self.weights[positions]

    def save(self, path: Path, *, sample_ids: Sequence[str] | None = None) -> None:
        """Write the graph to one `.npz` file, atomically (a temporary, then a rename).

        With `sample_ids` (one per dataset row), the file also records the sample_id of
        each point, so that `read_graph` can join it to a face cache by id.
        """
        extra = {}
        if sample_ids is not None:
            extra["sample_ids"] = np.asarray([str(sample_ids[row]) for row in self.rows])
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(
                handle,
                **extra,
                format=np.array(GRAPH_FORMAT),
                version=np.array(GRAPH_VERSION),
                rows=self.rows,
                indices=self.indices,
                distances=self.distances,
                weights=self.weights,
                sigma=np.array(np.nan if self.sigma is None else self.sigma),
                kernel=np.array(self.kernel),
                k=np.array(self.k),
                recall=np.array(np.nan if self.recall is None else self.recall),
            )

    @classmethod
    def load(cls, path: Path) -> NeighbourGraph:
        """Read a graph written by `save`.

        Raises:
            StageOutputError: the file is missing, not an `.npz` written by `save`, of
                another format version, or inconsistent.
        """
        path = Path(path)
        hint = "rebuild it with build_graph() (or rerun the stage that writes it)"
        if not path.is_file():
            raise StageOutputError(f"neighbour graph {path} not found; {hint}")
        try:
            with np.load(path, allow_pickle=False) as data:
                fields = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise StageOutputError(
                f"{path} is not a readable neighbour graph ({err}); {hint}"
            ) from None
        if str(fields.get("format", "")) != GRAPH_FORMAT:
            raise StageOutputError(f"{path} is not a lightfer neighbour graph; {hint}")
        if int(fields.get("version", -1)) != GRAPH_VERSION:
            raise StageOutputError(
                f"{path} is a neighbour graph of format version {fields.get('version')}, "
                f"this lightfer reads version {GRAPH_VERSION}; {hint}"
            )
        try:
            sigma, recall = float(fields["sigma"]), float(fields["recall"])
            return cls(
                rows=fields["rows"],
                indices=fields["indices"],
                distances=fields["distances"],
                weights=fields["weights"],
                sigma=None if math.isnan(sigma) else sigma,
                kernel=str(fields["kernel"]),
                k=int(fields["k"]),
                recall=None if math.isnan(recall) else recall,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise StageOutputError(
                f"{path} is an inconsistent neighbour graph ({err}); {hint}"
            ) from None


def write_graph(path: Path, graph: NeighbourGraph, sample_ids: Sequence[str]) -> None:
    """Write `graph` with the sample_id of each of its points (`sample_ids`: per dataset row)."""
    graph.save(path, sample_ids=sample_ids)


def read_graph(path: Path, *, sample_ids: Sequence[str], cache: Path) -> NeighbourGraph:
    """A graph `write_graph` wrote, its rows and neighbours renumbered to a face cache's rows.

    The points are matched by sample_id (`lightfer.sample_ids.align_to_cache`), so a face
    cache whose rows were reordered gets the graph of its own samples.

    Args:
        path: the graph file.
        sample_ids: the face cache's sample_id per row.
        cache: the face cache's folder (for messages).

    Raises:
        StageOutputError: the file is missing or unreadable, records no sample_ids, or
            holds samples the face cache does not.
    """
    graph = NeighbourGraph.load(path)
    with np.load(path, allow_pickle=False) as data:
        stored = data["sample_ids"].tolist() if "sample_ids" in data.files else None
    if stored is None:
        raise StageOutputError(f"{path} records no sample_ids; re-run the knn stage")
    positions = align_to_cache(
        stored, sample_ids, table=path, cache=cache, required=np.zeros(len(sample_ids), bool)
    )
    new_row = np.full(int(max(graph.rows.max(), graph.indices.max())) + 1, -1, np.int64)
    held = np.flatnonzero(positions >= 0)
    new_row[graph.rows[positions[held]]] = held
    indices = new_row[graph.indices]
    if (indices < 0).any():
        raise StageOutputError(f"{path} has neighbours that are not its points; re-run knn")
    return NeighbourGraph(
        rows=new_row[graph.rows],
        indices=indices,
        distances=graph.distances,
        weights=graph.weights,
        sigma=graph.sigma,
        kernel=graph.kernel,
        k=graph.k,
        recall=graph.recall,
    )


def training_graph(
    vectors: AuxVectors,
    splits: Splits,
    *,
    knn: KnnParams,
    threads: int,
    seed: int,
    index_dir: Path | None = None,
) -> tuple[NeighbourGraph, dict[str, Any]]:
    """The graph over the training faces that have an auxiliary vector, and its report.

    Args:
        vectors: one auxiliary vector per face-cache row.
        splits: the dataset's splits; the graph covers the training split.
        knn: the graph's settings.
        threads: threads for NGT.
        seed: seed of the recall sample and of the agreement's chance baseline.
        index_dir: where to keep the NGT index (None: a temporary folder).

    Returns:
        The graph (its rows are cache rows) and a report: the points in it, recall@K, the
        kernel width, and the neighbour agreement (does a face's neighbourhood share its
        label?), the figure that predicts whether the AU term can help.

    Raises:
        StageOutputError: too few training faces have a vector for K neighbours.
    """
    train = splits.train
    usable = vectors.status[train] == OK
    rows = train[usable]
    if len(rows) <= knn.k:
        raise StageOutputError(
            f"only {len(rows)} training faces have a {vectors.backend} vector, too few for "
            f"k={knn.k}; see reports/<dataset>/aux.json for why the others have none"
        )
    graph = build_graph(
        vectors.values[rows],
        rows,
        k=knn.k,
        standardise=knn.standardise,
        kernel=knn.kernel,
        sigma=knn.sigma,
        epsilon=knn.epsilon,
        threads=threads,
        index_dir=index_dir,
        recall_sample=knn.recall_sample,
        seed=seed,
    )
    report = {
        "backend": vectors.backend,
        "dimensions": len(vectors.names),
        "train_faces": len(train),
        "in_graph": len(rows),
        "without_vector": int((~usable).sum()),
        "k": knn.k,
        "kernel": graph.kernel,
        "sigma": None if graph.sigma is None else float(graph.sigma),  # None: uniform kernel
        "recall_at_k": graph.recall,
        "mean_weight": float(graph.weights.mean()),
    }
    agreement = neighbour_agreement(
        rows, graph.indices, splits.labels, true_dist=splits.true_dist, seed=seed
    )
    report.update(agreement)
    return graph, report


def build_graph(
    vectors: np.ndarray,
    rows: np.ndarray,
    *,
    k: int,
    standardise: bool = True,
    kernel: str = "exp",
    sigma: float | None = None,
    epsilon: float = 0.1,
    threads: int = 2,
    index_dir: Path | None = None,
    recall_sample: int = 1000,
    seed: int = 0,
    edge_size_for_creation: int = EDGE_SIZE_FOR_CREATION,
    edge_size_for_search: int = EDGE_SIZE_FOR_SEARCH,
    edge_size_for_query: int = EDGE_SIZE_FOR_QUERY,
) -> NeighbourGraph:
    """Build the K-nearest-neighbour graph of AU vectors, with edge weights.

    Args:
        vectors: (N, D) AU vectors, only valid (finite) rows.
        rows: (N,) dataset row of each vector (unique); the graph refers to images by it.
        k: neighbours per image.
        standardise: z-score each dimension first (see `standardise`).
        kernel: edge-weight kernel, see `edge_weights`.
        sigma: kernel width; None chooses it from the median neighbour distance.
        epsilon: NGT search range coefficient, see `query_neighbours`.
        threads: threads for building and querying the index.
        index_dir: directory to keep the NGT index in, see `approximate_neighbours`.
        recall_sample: points whose neighbours are also found by exact search to measure
            recall@K (seeded by `seed`); 0 skips the check.
        seed: seed of the recall sample.
        edge_size_for_creation: see `EDGE_SIZE_FOR_CREATION`.
        edge_size_for_search: see `EDGE_SIZE_FOR_SEARCH`.
        edge_size_for_query: see `EDGE_SIZE_FOR_QUERY`.

    Returns:
        The graph; its `indices` are dataset rows. The same inputs on the same machine give
        the same graph.
    """
    if kernel not in KERNELS:
        raise ValueError(f"Invalid kernel {kernel!r}. Only {', '.join(KERNELS)} are supported.")
    points = _as_points(vectors)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.shape != (points.shape[0],):
        raise ValueError(f"rows must have shape ({points.shape[0]},), got {rows.shape}")
    if rows.size and (rows.min() < 0 or np.unique(rows).size != rows.size):
        raise ValueError("rows must be unique, non-negative dataset rows")
    if standardise:
        points = _zscore(points)
    positions, distances, seconds = approximate_neighbours(
        points,
        k,
        epsilon=epsilon,
        threads=threads,
        index_dir=index_dir,
        edge_size_for_creation=edge_size_for_creation,
        edge_size_for_search=edge_size_for_search,
        edge_size_for_query=edge_size_for_query,
    )
    logger.info(
        "NGT neighbour graph of %d x %d points, k=%d: order %.1f s, build %.1f s, query %.1f s",
        points.shape[0],
        points.shape[1],
        k,
        seconds["order"],
        seconds["build"],
        seconds["query"],
    )
    recall = None
    if recall_sample > 0:
        rng = np.random.default_rng(seed)
        sample = np.sort(
            rng.choice(points.shape[0], min(recall_sample, points.shape[0]), replace=False)
        )
        exact, _ = exact_neighbours(points, k, rows=sample)
        recall = recall_at_k(positions[sample], exact)
        log = logger.warning if recall < 0.9 else logger.info
        log(
            "recall@%d %.4f on %d points (epsilon %g)%s",
            k,
            recall,
            sample.size,
            epsilon,
            "; raise epsilon for better neighbour lists" if recall < 0.9 else "",
        )
    weights, used_sigma = edge_weights(distances, kernel=kernel, sigma=sigma)
    return NeighbourGraph(
        rows=rows,
        indices=rows[positions],
        distances=distances,
        weights=weights,
        sigma=used_sigma,
        kernel=kernel,
        k=k,
        recall=recall,
    )


def _zscore(points: np.ndarray) -> np.ndarray:
    # `build_graph`'s `standardise` argument shadows the function of that name.
    return standardise(points)[0]
