"""Import of MLCR's 12 AU probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from lightfer.au import OK, mlcr_aux
from lightfer.au.mlcr import EMOTIONET_12
from lightfer.errors import AuxLabelError


def _table(keys: list[str], key_column: str = "sample_id", spelling: str = "AU{:02d}") -> str:
    numbers = [int(name[2:]) for name in EMOTIONET_12]
    header = [key_column, "view", *[spelling.format(n) for n in reversed(numbers)]]
    lines = [",".join(header)]
    for i, key in enumerate(keys):
        probabilities = [f"{(i + 1) / 10 + k / 100:.2f}" for k in reversed(range(12))]
        lines.append(",".join([key, "mean", *probabilities]))
    return "\n".join(lines) + "\n"


def _expected(i: int) -> np.ndarray:
    return np.array([(i + 1) / 10 + k / 100 for k in range(12)], dtype=np.float32)


def test_probabilities_are_matched_by_sample_id_in_emotionet_order(tmp_path):
    path = tmp_path / "mlcr.csv"
    path.write_text(_table(["train/0001", "train/0002", "test/0001"], spelling="AU{}"))
    aux = mlcr_aux(["test/0001", "val/0009", "train/0001"], path)
    assert aux.backend == "mlcr" and aux.names == EMOTIONET_12
    assert aux.status.tolist() == [OK, "not_in_csv", OK]
    np.testing.assert_allclose(aux.values[0], _expected(2), atol=1e-6)
    np.testing.assert_allclose(aux.values[2], _expected(0), atol=1e-6)
    assert np.isnan(aux.values[1]).all()
    assert aux.counts() == {OK: 2, "not_in_csv": 1}


def test_a_subset_of_aus_can_be_read(tmp_path):
    path = tmp_path / "mlcr.csv"
    path.write_text(_table(["a"]))
    aux = mlcr_aux(["a"], path, au_names=["AU12", "AU6"])
    assert aux.names == ("AU12", "AU6")
    np.testing.assert_allclose(aux.values[0], [0.16, 0.14], atol=1e-6)


def test_image_paths_match_sample_ids_by_their_trailing_parts(tmp_path):
    path = tmp_path / "mlcr.csv"
    path.write_text(
        _table(
            ["/data/raf/train_0001.jpg", "raf/train_0002.png", "C:\\raf\\test_0003.jpg"], "image"
        )
    )
    aux = mlcr_aux(["train_0001", "raf/train_0002", "test_0003", "train_0004"], path)
    assert aux.status.tolist() == [OK, OK, OK, "not_in_csv"]
    np.testing.assert_allclose(
        aux.values[:3], [_expected(0), _expected(1), _expected(2)], atol=1e-6
    )


def test_a_stem_shared_by_two_images_needs_a_longer_id(tmp_path):
    path = tmp_path / "mlcr.csv"
    path.write_text(_table(["a/x.jpg", "b/x.jpg"], "file"))
    aux = mlcr_aux(["b/x", "a/x"], path)
    np.testing.assert_allclose(aux.values, [_expected(1), _expected(0)], atol=1e-6)
    with pytest.raises(AuxLabelError, match="sample 'x' matches several file values"):
        mlcr_aux(["x"], path)


@pytest.mark.parametrize(
    ("row", "column", "value", "message"),
    [
        (0, "AU20", "1.30", r"data row 1 \(sample_id 'a'\), column AU20: 1.3 is not a probability"),
        (1, "AU25", "-0.5", r"data row 2 \(sample_id 'b'\), column AU25: -0.5 is not"),
        (0, "AU06", "high", r"data row 1 \(sample_id 'a'\), column AU06: 'high' is not"),
        (1, "AU01", "", r"data row 2 \(sample_id 'b'\), column AU01: an empty cell is not"),
    ],
    ids=["above_one", "negative", "text", "empty"],
)
def test_values_that_are_not_probabilities_are_refused(tmp_path, row, column, value, message):
    path = tmp_path / "mlcr.csv"
    lines = [line.split(",") for line in _table(["a", "b"]).splitlines()]
    lines[1 + row][lines[0].index(column)] = value
    path.write_text("\n".join(",".join(line) for line in lines) + "\n")
    with pytest.raises(AuxLabelError, match=message) as raised:
        mlcr_aux(["a"], path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,AU1\nx,0.5\n", r"no key column; expected one of sample_id, image, file, path"),
        (
            "sample_id,AU1,AU2\nx,0.5,0.5\n",
            r"no column for AU04 \(accepted spellings: AU4 or AU04\)",
        ),
        (_table(["a", "b", "a"]), r"sample_id 'a' appears twice \(data rows 1 and 3\)"),
        ("", "cannot read the MLCR table"),
    ],
    ids=["no_key", "missing_au", "duplicate", "empty_file"],
)
def test_malformed_tables_are_refused(tmp_path, text, message):
    path = tmp_path / "mlcr.csv"
    path.write_text(text)
    with pytest.raises(AuxLabelError, match=message):
        mlcr_aux(["a"], path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(AuxLabelError, match=r"nothing\.csv: cannot read the MLCR table"):
        mlcr_aux(["a"], tmp_path / "nothing.csv")
