"""The AU-space neighbour graph: NGT neighbours against exact search, weights, and the file."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightfer import knn
from lightfer.errors import StageOutputError


def clustered(n: int, dim: int, *, seed: int = 0, clusters: int = 7) -> np.ndarray:
    """Points from a mixture of Gaussian clusters (AU vectors cluster by expression)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory) -> tuple[np.ndarray, ...]:
    """300 x 5 clustered points, their NGT neighbours (k=6, epsilon 1) and exact ones."""
    points = clustered(300, 5)
    index = knn.build_index(points, tmp_path_factory.mktemp("ngt") / "index", threads=1)
    ids, distances = knn.query_neighbours(index, points, 6, epsilon=1.0, threads=1)
    index.close()
    return (ids, distances, *knn.exact_neighbours(points, 6))


def test_query_neighbours_match_exact_search(small_graph) -> None:
    ids, distances, exact_ids, exact_distances = small_graph
    assert ids.shape == distances.shape == (300, 6)
    assert ids.dtype == np.int64 and distances.dtype == np.float32
    assert knn.recall_at_k(ids, exact_ids) >= 0.99
    # NGT distances are L2 (not squared), like the exact ones, and sorted nearest first.
    np.testing.assert_allclose(distances, exact_distances, rtol=1e-4, atol=1e-5)
    assert (np.diff(distances, axis=1) >= 0).all()


def test_approximate_neighbours_map_back_to_input_positions() -> None:
    points = clustered(300, 5, seed=6)
    positions, distances, seconds = knn.approximate_neighbours(points, 6, epsilon=1.0, threads=1)
    exact_ids, exact_distances = knn.exact_neighbours(points, 6)
    assert knn.recall_at_k(positions, exact_ids) >= 0.99
    np.testing.assert_allclose(distances, exact_distances, rtol=1e-4, atol=1e-5)
    assert set(seconds) == {"order", "build", "query"}


def test_locality_order_is_a_deterministic_permutation_that_groups_clusters() -> None:
    points = clustered(2000, 17, seed=7, clusters=4)
    order = knn.locality_order(points)
    assert order.dtype == np.int64
    np.testing.assert_array_equal(np.sort(order), np.arange(2000))
    np.testing.assert_array_equal(knn.locality_order(points), order)
    # Consecutive points in the order are much closer than consecutive points in the input.
    step = np.linalg.norm(np.diff(points[order], axis=0), axis=1).mean()
    assert step < 0.7 * np.linalg.norm(np.diff(points, axis=0), axis=1).mean()


def test_query_neighbours_exclude_the_point_itself(small_graph) -> None:
    ids = small_graph[0]
    assert not (ids == np.arange(300)[:, None]).any()
    assert all(len(set(row)) == 6 for row in ids.tolist())


def test_well_separated_points_give_exactly_the_exact_neighbours(tmp_path) -> None:
    # 8 tight groups of 4 far apart: each point's 3 neighbours are the rest of its group.
    rng = np.random.default_rng(1)
    centres = np.arange(8)[:, None] * 100.0 * np.ones((1, 3))
    points = (np.repeat(centres, 4, axis=0) + rng.normal(scale=0.1, size=(32, 3))).astype(
        np.float32
    )
    rows = np.arange(32) * 10 + 5
    graph = knn.build_graph(points, rows, k=3, standardise=False, recall_sample=32)
    exact_ids, exact_distances = knn.exact_neighbours(points, 3)
    np.testing.assert_array_equal(graph.indices, rows[exact_ids])
    np.testing.assert_allclose(graph.distances, exact_distances, rtol=1e-5)
    assert graph.recall == 1.0
    groups = graph.indices // 10 // 4
    assert (groups == (np.arange(32) // 4)[:, None]).all()


def test_exclude_self_drops_own_id_else_the_last_result() -> None:
    ids = np.array([[1, 0, 2, 3], [0, 2, 3, 4], [0, 3, 4, 5]])
    distances = np.array([[0, 0, 1, 2], [0, 0, 0, 0], [0, 0, 0, 0.5]], dtype=np.float32)
    kept, kept_distances = knn._exclude_self(ids, distances)
    # Row 0: own id 0 second (a duplicate tie) -> dropped. Row 1: own id 1 absent among
    # four duplicates -> the last is dropped. Row 2: own id 2 absent -> the last dropped.
    np.testing.assert_array_equal(kept, [[1, 2, 3], [0, 2, 3], [0, 3, 4]])
    np.testing.assert_array_equal(kept_distances, [[0, 1, 2], [0, 0, 0], [0, 0, 0]])


def test_exact_duplicates_are_neighbours_at_distance_zero(tmp_path) -> None:
    rng = np.random.default_rng(2)
    unique = rng.normal(size=(40, 4)).astype(np.float32)
    # Point 0 appears 7 times (more than k + 1 = 4), point 1 twice.
    points = np.concatenate(
        [np.repeat(unique[:1], 7, axis=0), np.repeat(unique[1:2], 2, axis=0), unique[2:]]
    )
    index = knn.build_index(points, tmp_path / "index", threads=1)
    ids, distances = knn.query_neighbours(index, points, 3, epsilon=0.5, threads=1)
    index.close()
    assert not (ids == np.arange(len(points))[:, None]).any()
    copies = set(range(7))
    for i in range(7):
        assert set(ids[i]) <= copies - {i}
        np.testing.assert_array_equal(distances[i], 0.0)
    assert ids[7, 0] == 8 and ids[8, 0] == 7
    assert distances[7, 0] == distances[8, 0] == 0.0


@pytest.mark.parametrize("kernel", ["exp", "gaussian", "uniform"])
def test_edge_weights_follow_the_kernel_formula(kernel: str) -> None:
    d = np.array([[0.0, 0.5, 1.0], [2.0, 3.0, 4.0]])
    weights, sigma = knn.edge_weights(d, kernel=kernel, sigma=1.5)
    expected = {
        "exp": np.exp(-d / 1.5**2),
        "gaussian": np.exp(-(d**2) / (2 * 1.5**2)),
        "uniform": np.ones_like(d),
    }[kernel]
    assert weights.dtype == np.float32 and weights.shape == (2, 3)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    assert sigma == (None if kernel == "uniform" else 1.5)


@pytest.mark.parametrize("kernel", ["exp", "gaussian"])
def test_automatic_sigma_gives_the_median_distance_weight_exp_minus_one(kernel: str) -> None:
    d = np.array([[0.2, 0.9, 1.3], [0.4, 2.5, 3.0], [0.1, 0.6, 5.0]])  # median 0.9
    weights, sigma = knn.edge_weights(d, kernel=kernel)
    assert sigma == pytest.approx(math.sqrt(0.9) if kernel == "exp" else 0.9 / math.sqrt(2))
    assert weights[0, 1] == pytest.approx(math.exp(-1), rel=1e-6)


def test_automatic_sigma_skips_a_zero_median_and_bad_arguments_are_refused() -> None:
    d = np.array([[0.0, 0.0, 4.0], [0.0, 0.0, 0.0]])  # median 0 (duplicates)
    weights, sigma = knn.edge_weights(d, kernel="exp")
    assert sigma == pytest.approx(2.0) and weights[0, 2] == pytest.approx(math.exp(-1))
    with pytest.raises(ValueError, match=r"Invalid kernel 'cosine'\. Only exp, gaussian"):
        knn.edge_weights(d, kernel="cosine")
    with pytest.raises(ValueError, match="sigma must be positive"):
        knn.edge_weights(d, sigma=0.0)


def _graph(**overrides) -> knn.NeighbourGraph:
    fields = dict(
        rows=np.array([10, 3, 7, 42]),
        indices=np.array([[3, 7], [7, 10], [3, 42], [7, 3]]),
        distances=np.array([[0.5, 1.0], [0.2, 0.5], [0.2, 0.3], [0.3, 0.9]]),
        weights=np.array([[0.6, 0.3], [0.9, 0.6], [0.9, 0.8], [0.8, 0.4]]),
        sigma=0.7,
        kernel="exp",
        k=2,
        recall=0.98,
    )
    return knn.NeighbourGraph(**{**fields, **overrides})


@pytest.mark.parametrize("overrides", [{}, {"sigma": None, "kernel": "uniform", "recall": None}])
def test_graph_save_load_round_trip(tmp_path, overrides) -> None:
    graph = _graph(**overrides)
    graph.save(tmp_path / "graph.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["graph.npz"]
    loaded = knn.NeighbourGraph.load(tmp_path / "graph.npz")
    for name in ("rows", "indices", "distances", "weights"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(graph, name))
        assert getattr(loaded, name).dtype == getattr(graph, name).dtype
    assert (loaded.sigma, loaded.kernel, loaded.k, loaded.recall) == (
        graph.sigma,
        graph.kernel,
        graph.k,
        graph.recall,
    )


def test_a_corrupt_or_foreign_graph_file_is_refused_with_a_clear_message(tmp_path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(StageOutputError, match=r"garbage\.npz is not a readable neighbour graph"):
        knn.NeighbourGraph.load(garbage)
    truncated = tmp_path / "truncated.npz"
    _graph().save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(StageOutputError, match="rebuild it with build_graph"):
        knn.NeighbourGraph.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, rows=np.arange(3))
    with pytest.raises(StageOutputError, match=r"foreign\.npz is not a lightfer neighbour graph"):
        knn.NeighbourGraph.load(foreign)
    newer = tmp_path / "newer.npz"
    np.savez(newer, format=np.array(knn.GRAPH_FORMAT), version=np.array(99))
    with pytest.raises(StageOutputError, match="format version 99, this lightfer reads version 1"):
        knn.NeighbourGraph.load(newer)
    with pytest.raises(StageOutputError, match=r"missing\.npz not found"):
        knn.NeighbourGraph.load(tmp_path / "missing.npz")


def test_a_graph_follows_its_samples_into_a_reordered_face_cache(tmp_path) -> None:
    """The graph file keeps each point's sample_id; a cache in another order gets the
    graph of its own samples, renumbered, and a cache of other samples is refused."""
    ids = [f"s{row}" for row in range(50)]
    graph = _graph()
    knn.write_graph(tmp_path / "graph.npz", graph, ids)
    order = np.random.default_rng(0).permutation(50)  # new row i holds old row order[i]
    reordered = [ids[old] for old in order]
    loaded = knn.read_graph(tmp_path / "graph.npz", sample_ids=reordered, cache=tmp_path)
    new_row = np.argsort(order)
    np.testing.assert_array_equal(loaded.rows, new_row[graph.rows])
    np.testing.assert_array_equal(loaded.indices, new_row[graph.indices])
    np.testing.assert_array_equal(loaded.weights, graph.weights)
    with pytest.raises(StageOutputError, match=r"holds 1 sample_ids that the face cache"):
        knn.read_graph(tmp_path / "graph.npz", sample_ids=ids[:42], cache=tmp_path)
    graph.save(tmp_path / "anonymous.npz")
    with pytest.raises(StageOutputError, match="records no sample_ids; re-run the knn stage"):
        knn.read_graph(tmp_path / "anonymous.npz", sample_ids=ids, cache=tmp_path)


def test_lookup_maps_dataset_rows_to_neighbour_rows_and_weights() -> None:
    graph = _graph()
    neighbours, weights = graph.lookup(np.array([7, 10, 7]))
    np.testing.assert_array_equal(neighbours, [[3, 42], [3, 7], [3, 42]])
    np.testing.assert_allclose(weights, [[0.9, 0.8], [0.6, 0.3], [0.9, 0.8]], rtol=1e-6)
    for unknown in (5, 43, -1):
        with pytest.raises(
            StageOutputError, match=rf"not in the neighbour graph, e.g. \[{unknown}\]"
        ):
            graph.lookup(np.array([3, unknown]))


def test_graph_rows_must_be_unique_and_shapes_consistent() -> None:
    with pytest.raises(ValueError, match="unique"):
        _graph(rows=np.array([10, 3, 3, 42]))
    with pytest.raises(ValueError, match=r"weights must have shape \(4, 2\)"):
        _graph(weights=np.ones((4, 3)))


def test_build_graph_is_deterministic_and_refers_to_dataset_rows(tmp_path) -> None:
    points = clustered(3000, 17, seed=3)
    rows = np.arange(3000) * 2 + 1
    graphs = [
        knn.build_graph(
            points,
            rows,
            k=8,
            threads=threads,
            recall_sample=200,
            index_dir=tmp_path / f"index{run}",
        )
        for run, threads in enumerate([2, 2, 1])
    ]
    first = graphs[0]
    for other in graphs[1:]:
        for name in ("rows", "indices", "distances", "weights"):
            np.testing.assert_array_equal(getattr(other, name), getattr(first, name))
        assert other.sigma == first.sigma and other.recall == first.recall
    assert np.isin(first.indices, rows).all()
    assert not (first.indices == rows[:, None]).any()
    assert 0.9 <= first.recall <= 1.0
    assert first.weights[:, 0] == pytest.approx(first.weights.max(axis=1))
    # The kept index carries the seed setting that makes NGT's batch search deterministic,
    # and the map from its object ids to input positions.
    assert "SeedType\tAllLeafNodes" in (tmp_path / "index0" / "prf").read_text()
    order = np.load(tmp_path / "index0.order.npy")
    index = knn.ngtpy.Index(str(tmp_path / "index0"))
    np.testing.assert_allclose(index.get_object(5), knn.standardise(points)[0][order[5]])
    index.close()


def test_openmp_thread_count_is_set_for_the_search_and_restored() -> None:
    runtime = knn._ngt_openmp()
    assert runtime is not None
    before = runtime.omp_get_max_threads()
    with knn._openmp_threads(1):
        assert runtime.omp_get_max_threads() == 1
    assert runtime.omp_get_max_threads() == before


def test_standardise_gives_zero_mean_unit_std_and_survives_a_constant_dimension() -> None:
    rng = np.random.default_rng(4)
    points = np.column_stack([rng.normal(5, 3, 500), np.full(500, 2.0), rng.normal(size=500)])
    z, mean, std = knn.standardise(points)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), [1, 0, 1], atol=1e-5)
    assert std[1] == 1.0 and mean[1] == 2.0
    again, _, _ = knn.standardise(points[:10], mean=mean, std=std)
    np.testing.assert_array_equal(again, z[:10])
    points[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"1 rows with NaN or infinite values \(positions \[7\]"):
        knn.standardise(points)


def test_exact_neighbours_of_some_rows_and_recall() -> None:
    points = clustered(200, 4, seed=5)
    all_ids, all_distances = knn.exact_neighbours(points, 5)
    some_ids, some_distances = knn.exact_neighbours(
        points, 5, rows=np.array([3, 150]), block_elements=7
    )
    np.testing.assert_array_equal(some_ids, all_ids[[3, 150]])
    np.testing.assert_array_equal(some_distances, all_distances[[3, 150]])
    brute = np.linalg.norm(points[3] - points.astype(np.float64), axis=1)
    brute[3] = np.inf
    np.testing.assert_array_equal(all_ids[3], np.argsort(brute)[:5])
    assert knn.recall_at_k(np.array([[1, 2], [3, 4]]), np.array([[2, 1], [3, 5]])) == 0.75
