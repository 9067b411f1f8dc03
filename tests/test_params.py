"""The params schema: every mistake is caught before any work, named by its key path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from lightfer.cli import app
from lightfer.errors import ParamsError
from lightfer.labels import CLASSES
from lightfer.params import DATASET_KINDS, Params, load_params, validate_params
from tests.conftest import PROJECT_ROOT, default_params, tiny_params

OFFICIAL_FOLDERS = {str(k): name for k, name in enumerate(CLASSES)}


def _error(raw: dict) -> str:
    with pytest.raises(ParamsError) as info:
        validate_params(raw)
    return str(info.value)


def _with(path: str, value) -> dict:
    raw = copy.deepcopy(default_params())
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return raw


def test_the_project_params_file_is_valid():
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert "synthetic" in params.datasets
    assert params.train.ef.arch == "efficientface"


def test_unknown_key_is_named_with_a_suggestion():
    raw = default_params()
    raw["align"]["crop_sise"] = raw["align"].pop("crop_size")
    message = _error(raw)
    assert "align.crop_sise: unknown key; did you mean 'crop_size'?" in message


def test_unknown_key_inside_a_dataset_names_the_dataset_path():
    raw = default_params()
    raw["datasets"]["synthetic"]["n_trian"] = 10
    assert "datasets.synthetic.n_trian: unknown key; did you mean 'n_train'?" in _error(raw)


def test_choice_error_lists_the_allowed_values():
    message = _error(_with("align.border", "mirror"))
    assert "align.border: 'mirror' is not one of constant, replicate" in message


def test_dataset_kind_typo_lists_the_kinds():
    message = _error(_with("datasets.synthetic.kind", "synthetik"))
    kinds = "synthetic, rafdb, ferplus, caers, affectnet, imagefolder"
    assert f"datasets.synthetic.kind: 'synthetik' is not one of {kinds}" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("align.crop_size", 8, "align.crop_size: 8 is invalid: Input should be greater than or"),
        ("align.crop_size", "big", "align.crop_size: 'big' is invalid"),
        ("base.seed", -1, "base.seed: -1 is invalid"),
        ("datasets.synthetic.blend_prob", 1.5, "datasets.synthetic.blend_prob: 1.5 is invalid"),
    ],
)
def test_wrong_type_or_range_names_key_and_value(key, value, expected):
    assert expected in _error(_with(key, value))


def test_every_problem_is_reported_at_once():
    raw = _with("align.crop_size", 8)
    raw["base"]["threds"] = 2
    lines = _error(raw).splitlines()
    assert lines[0] == "params is invalid:"
    assert any(line.strip().startswith("align.crop_size:") for line in lines)
    assert any(line.strip().startswith("base.threds:") for line in lines)


def test_synthetic_prior_must_name_every_class():
    raw = default_params()
    raw["datasets"]["synthetic"]["class_prior"] = {"neutral": 1.0, "happyness": 1.0}
    message = _error(raw)
    assert "datasets.synthetic.class_prior: must name each of" in message
    assert "unknown ['happyness']" in message


def test_missing_dataset_root_is_named_with_what_to_do(tmp_path: Path):
    raw = _with(
        "datasets",
        {
            "rafdb": {
                "kind": "imagefolder",
                "root": str(tmp_path / "nope"),
                "classes": OFFICIAL_FOLDERS,
            }
        },
    )
    message = _error(raw)
    assert f"datasets.rafdb.root: directory '{tmp_path / 'nope'}' does not exist" in message
    assert "point it at the folder that holds the split folders" in message


def test_incomplete_class_map_is_refused(tmp_path: Path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
    classes = dict(OFFICIAL_FOLDERS)
    del classes["6"]
    raw = _with(
        "datasets", {"rafdb": {"kind": "imagefolder", "root": str(tmp_path), "classes": classes}}
    )
    assert "no folder for anger" in _error(raw)


def test_relative_dataset_root_resolves_against_the_params_file(tmp_path: Path, write_params):
    for split in ("train", "test"):
        (tmp_path / "faces" / split).mkdir(parents=True)
    raw = _with(
        "datasets", {"mine": {"kind": "imagefolder", "root": "faces", "classes": OFFICIAL_FOLDERS}}
    )
    raw["study"]["datasets"] = []  # the AU-noise study needs a synthetic dataset
    params = load_params(write_params(raw))
    assert params.datasets["mine"].root == tmp_path / "faces"


def test_yaml_syntax_error_names_the_file(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("base: {seed: 1\n")
    with pytest.raises(ParamsError, match=f"{path} is not valid YAML"):
        load_params(path)


def test_cli_reports_problems_on_stderr_and_exits_1(tmp_path: Path, write_params):
    bad = write_params(_with("align.border", "mirror"))
    result = CliRunner().invoke(app, ["params", "--file", str(bad)])
    assert result.exit_code == 1, result.output
    assert "align.border: 'mirror' is not one of constant, replicate" in result.stderr
    good = write_params(default_params(), name="good.yaml")
    result = CliRunner().invoke(app, ["params", "--file", str(good)])
    assert result.exit_code == 0, result.output
    assert "valid (1 dataset(s): synthetic)" in result.stdout


def _field_names(model) -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        names.add(name)
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                names |= _field_names(candidate)
    return names


def test_no_param_key_is_named_size_or_nfiles():
    """DVC's run-cache drops keys named `size` or `nfiles` from a stage's hash at any depth
    (treeverse/dvc#10296), so changing such a param would silently check out stale outputs."""
    names = _field_names(Params)
    for model in DATASET_KINDS.values():
        names |= _field_names(model)
    assert "crop_size" in names
    assert not names & {"size", "nfiles"}


def test_a_dataset_root_that_is_not_the_layout_says_what_was_expected(tmp_path: Path):
    (tmp_path / "EmoLabel").mkdir()
    message = _error(_with("datasets", {"raf": {"kind": "rafdb", "root": str(tmp_path)}}))
    assert message.splitlines()[1].strip().startswith("datasets.raf:")
    assert "list_patition_label.txt" in message


def test_detection_settings_are_checked_too():
    message = _error(_with("align.detect", {"no_face": "guess"}))
    assert "align.detect.no_face: 'guess' is not one of skip, center_crop" in message


def test_relative_paths_are_resolved_against_the_params_file_and_stored_absolute(
    tmp_path, monkeypatch
):
    (tmp_path / "ds/folders/train/0").mkdir(parents=True)
    (tmp_path / "ds/folders/test/0").mkdir(parents=True)
    project = tmp_path / "project"
    project.mkdir()
    raw = copy.deepcopy(default_params())
    raw["datasets"] = {
        "mine": {"kind": "imagefolder", "root": "../ds/folders", "classes": OFFICIAL_FOLDERS}
    }
    raw["study"]["datasets"] = []
    import yaml

    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path / "ds")  # anywhere but the params file's folder
    params = load_params(Path("../project/params.yaml"))
    assert params.datasets["mine"].root == tmp_path / "ds/folders"
    assert params.datasets["mine"].root.is_absolute()


def test_repeated_keys_are_refused_with_their_lines(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 1\n  seed: 2\nalign: {}\nalign: {}\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert "line 3: key 'seed' repeats line 2" in str(info.value)
    assert "line 5: key 'align' repeats line 4" in str(info.value)


def test_the_openface_threshold_defaults_to_openface_s_own():
    from lightfer.au.openface import OPENFACE_SUCCESS_CONFIDENCE

    params = validate_params(default_params())
    assert params.aux.openface_min_confidence == OPENFACE_SUCCESS_CONFIDENCE == 0.725


def test_study_seeds_must_be_training_seeds(write_params):
    raw = tiny_params()
    raw["train"]["seeds"] = [0, 1]
    raw["study"]["seeds"] = [2]
    with pytest.raises(ParamsError, match=r"study.seeds: \[2\] not in train.seeds \[0, 1\]"):
        load_params(write_params(raw))


def test_a_key_dvc_yaml_expands_over_must_be_in_the_file(write_params):
    raw = tiny_params()
    del raw["study"]["seeds"]
    message = r"study.seeds: missing; dvc.yaml expands its stages over it.*study.seeds: \[0\]"
    with pytest.raises(ParamsError, match=message):
        load_params(write_params(raw))
