"""dvc.yaml and the code agree: every declared output is a catalogue path, every stage is
a module with `main`, and no stage depends on another stage's module."""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from lightfer import catalog
from tests.conftest import PROJECT_ROOT
from tests.stages.dvc_stages import DvcStage, dvc_stages

ROOT = Path(".")


def _metrics(dataset: str, *names: str) -> set[Path]:
    return {catalog.stage_metrics_path(ROOT, dataset, name) for name in names}


def _training(dataset: str, run: str) -> set[Path]:
    return {catalog.model_path(ROOT, dataset, run), *catalog.training_log_paths(ROOT, dataset, run)}


def _ef_regime(dataset: str, regime: str) -> set[Path]:
    """A regime's folders, which hold each seed's catalogued checkpoint and logs."""
    folders = {
        catalog.ef_models_dir(ROOT, dataset, regime),
        catalog.ef_logs_dir(ROOT, dataset, regime),
        catalog.ef_curves_dir(ROOT, dataset, regime),
    }
    run = catalog.ef_run_name(regime, 0)
    for path in _training(dataset, run):
        assert path.parent in folders, path
    return folders


# What each stage writes, in the catalogue's words, for its command's arguments.
OUTPUTS: dict[str, Callable[..., set[Path]]] = {
    "prepare": lambda dataset: {
        catalog.prepared_dir(ROOT, dataset),
        catalog.contact_sheet_path(ROOT, dataset),
        *_metrics(dataset, "prepare"),
    },
    "align": lambda dataset: {catalog.faces_dir(ROOT, dataset), *_metrics(dataset, "align")},
    "aux-labels": lambda dataset: {catalog.aux_path(ROOT, dataset), *_metrics(dataset, "aux")},
    "train-ldg": lambda dataset: _training(dataset, catalog.LDG_RUN),
    "soft-labels": lambda dataset: {
        catalog.soft_labels_path(ROOT, dataset),
        *_metrics(dataset, "soft_labels"),
    },
    "knn": lambda dataset: {catalog.knn_dir(ROOT, dataset), *_metrics(dataset, "knn")},
    "train-ef": lambda dataset, regime: _ef_regime(dataset, regime),
    "train-ef-au": lambda dataset: _ef_regime(dataset, "ldl_au"),
    "study": lambda dataset: {
        catalog.study_models_dir(ROOT, dataset),
        catalog.study_runs_dir(ROOT, dataset),
        catalog.study_curves_dir(ROOT, dataset),
    },
    "evaluate": lambda dataset: {
        catalog.table2_path(ROOT, dataset),
        catalog.confusion_dir(ROOT, dataset),
        *_metrics(dataset, "evaluate"),
    },
    "study-summary": lambda dataset: {
        catalog.study_table_path(ROOT, dataset),
        *_metrics(dataset, "study"),
    },
    "aux-analysis": lambda dataset: {
        catalog.aux_figures_dir(ROOT, dataset),
        *_metrics(dataset, "aux_analysis"),
    },
    "bench": lambda: {catalog.bench_table_path(ROOT), catalog.bench_metrics_path(ROOT)},
    "report": lambda: {
        catalog.report_path(ROOT),
        catalog.report_figures_dir(ROOT),
        catalog.summary_path(ROOT),
    },
}


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> list[DvcStage]:
    return dvc_stages(tmp_path_factory.mktemp("dag"), PROJECT_ROOT / "params.yaml")


def test_every_declared_output_is_the_catalogue_path_of_its_stage(stages):
    assert {stage.stage for stage in stages} == set(OUTPUTS)
    for stage in stages:
        expected = {path.as_posix() for path in OUTPUTS[stage.stage](**stage.arguments)}
        assert set(stage.outs) == expected, stage.name


def test_run_state_is_named_as_dvc_names_the_stage(stages):
    names = {catalog.stage_run_name(stage.stage, *stage.arguments.values()) for stage in stages}
    assert names == {stage.name for stage in stages}


def test_every_stage_is_a_module_whose_main_takes_its_command_arguments(stages, monkeypatch):
    """`main(argv)` with the argv of the stage's cmd runs the stage with those values."""
    monkeypatch.setattr("lightfer.stage.configure_process", lambda params: None)
    called = {}
    for stage in stages:
        module = importlib.import_module(stage.module)
        assert inspect.signature(module.main).parameters.keys() == {"argv"}, stage.module
        monkeypatch.setattr(module, "run", lambda params, root, **values: called.update(values))
        called.clear()
        assert module.main([*stage.argv, "--params", str(PROJECT_ROOT / "params.yaml")]) == 0
        assert called == stage.arguments, stage.name


def test_a_stage_depends_on_its_own_module_and_no_other(stages):
    """So a cosmetic edit to one stage module reruns that stage only."""
    for stage in stages:
        modules = [dep for dep in stage.deps if dep.startswith("stages/")]
        assert modules == [stage.module.replace(".", "/") + ".py"], stage.name


def test_no_stage_module_imports_another_or_declares_its_dag():
    for path in sorted((PROJECT_ROOT / "stages").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [name for name in imported if name.split(".")[0] == "stages"], path.name
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert "STAGE" not in names, path.name
