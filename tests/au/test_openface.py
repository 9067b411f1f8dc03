"""OpenFace import (both CSV header styles, failed faces) and the FaceLandmarkImg plumbing.

OpenFace itself is not installed here: `run_openface` is tested against a stand-in
`FaceLandmarkImg` script that writes outputs the way the real program does (see
`lightfer.au.openface`): one `<stem>_of_details.txt` per image, and a `<stem>.csv` with one
row per face only when it found a face.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from lightfer.au import OK
from lightfer.au.openface import (
    OPENFACE_NAMES,
    find_openface,
    openface_aux,
    openface_command,
    read_openface_csv,
    run_openface,
)
from lightfer.errors import AuxLabelError
from lightfer.labels import AU_NAMES

_PRESENCE = sorted([*AU_NAMES, "AU28"])  # OpenFace's 18 `_c` columns


def openface_csv(
    faces: list[tuple[float, list[float]]], *, sep: str, sequence: bool = False
) -> str:
    """An OpenFace CSV as FaceLandmarkImg (or FeatureExtraction if `sequence`) writes it.

    Args:
        faces: (confidence, 17 intensities) per row; for `sequence`, confidence < 0 means
            success 0.
        sep: `", "` (older builds, leading spaces in names) or `","` (newer builds).
    """
    first = (
        ["frame", "face_id", "timestamp", "confidence", "success"]
        if sequence
        else ["face", "confidence"]
    )
    pose = ["pose_Tx", "pose_Ty", "pose_Tz", "pose_Rx", "pose_Ry", "pose_Rz"]
    header = first + pose + [f"{n}_r" for n in AU_NAMES] + [f"{n}_c" for n in _PRESENCE]
    lines = [sep.join(header)]
    for i, (confidence, intensities) in enumerate(faces):
        if sequence:
            lead = [
                f"{i + 1}",
                "0",
                f"{i * 0.04:.3f}",
                f"{abs(confidence):.2f}",
                "0" if confidence < 0 else "1",
            ]
        else:
            lead = [f"{i}", f"{confidence:.3f}"]
        values = [f"{v:.2f}" for v in intensities]
        by_name = dict(zip(AU_NAMES, intensities, strict=True))
        presence = [f"{float(by_name.get(name, 0.0) > 1):.1f}" for name in _PRESENCE]
        lines.append(sep.join(lead + ["1.0"] * 6 + values + presence))
    return "\n".join(lines) + "\n"


def _aus(level: float) -> list[float]:
    return [round(level + 0.1 * k, 2) for k in range(17)]


@pytest.mark.parametrize("sep", [", ", ","], ids=["spaced", "compact"])
def test_both_header_styles_read_the_same(tmp_path, sep):
    path = tmp_path / "img.csv"
    path.write_text(openface_csv([(0.975, _aus(1.0))], sep=sep))
    if sep == ", ":
        assert " AU01_r" in path.read_text().splitlines()[0].split(",")
    table = read_openface_csv(path)
    assert list(table.columns[:2]) == ["face", "confidence"]
    assert table["AU45_r"].iloc[0] == pytest.approx(2.6)
    assert table["AU28_c"].iloc[0] == 0.0

    aux = openface_aux([tmp_path / "photos" / "img.jpg"], csv_dir=tmp_path)
    assert aux.backend == "openface" and aux.names == OPENFACE_NAMES
    assert aux.names[0] == "AU01_r" and aux.names[-1] == "AU45_r" and len(aux.names) == 17
    assert aux.status.tolist() == [OK]
    np.testing.assert_allclose(aux.values[0], _aus(1.0), atol=1e-6)


def test_failed_faces_are_nan_with_a_reason(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "good.csv").write_text(openface_csv([(0.9, _aus(0.5))], sep=", "))
    (out / "empty.csv").write_text("")
    (out / "header_only.csv").write_text(openface_csv([], sep=","))
    (out / "noface_of_details.txt").write_text("Input:noface.png\n")  # no CSV: no face found
    (out / "failed.csv").write_text(openface_csv([(-0.2, _aus(3.0))], sep=", ", sequence=True))
    (out / "weak.csv").write_text(openface_csv([(0.1, _aus(2.0))], sep=","))
    names = ["good", "empty", "header_only", "noface", "failed", "never_run", "weak"]

    aux = openface_aux([Path(f"{name}.png") for name in names], csv_dir=out, min_confidence=0.5)
    assert aux.status.tolist() == [
        OK,
        "openface_no_face",
        "openface_no_face",
        "openface_no_face",
        "openface_failed",
        "openface_missing_csv",
        "openface_low_confidence",
    ]
    assert np.isfinite(aux.values[0]).all() and np.isnan(aux.values[1:]).all()
    assert aux.counts()["openface_no_face"] == 3


def test_the_most_confident_face_is_used(tmp_path):
    faces = [(0.6, _aus(1.0)), (0.95, _aus(2.0)), (0.3, _aus(3.0))]
    (tmp_path / "group.csv").write_text(openface_csv(faces, sep=", "))
    aux = openface_aux([Path("group.jpg")], csv_dir=tmp_path)
    np.testing.assert_allclose(aux.values[0], _aus(2.0), atol=1e-6)


def test_successful_sequence_rows_are_kept(tmp_path):
    faces = [(-0.9, _aus(1.0)), (0.8, _aus(2.0))]
    (tmp_path / "clip.csv").write_text(openface_csv(faces, sep=", ", sequence=True))
    aux = openface_aux([Path("clip.jpg")], csv_dir=tmp_path)
    np.testing.assert_allclose(aux.values[0], _aus(2.0), atol=1e-6)


def test_images_sharing_a_stem_are_refused(tmp_path):
    with pytest.raises(AuxLabelError, match=r"a/x\.jpg and b/x\.png share the file stem 'x'"):
        openface_aux([Path("a/x.jpg"), Path("c/y.jpg"), Path("b/x.png")], csv_dir=tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("face,confidence,pose_Rx\n0,0.9,0.1\n", r"no AU intensity columns \(AUxx_r\).*-aus"),
        (b"\xff\xfe\x00garbage", "cannot read it as an OpenFace CSV"),
        ("face,confidence,AU01_r\n0,0.9,1.0\n", r"missing AU intensity columns \['AU02_r'"),
    ],
    ids=["no_aus", "binary", "few_aus"],
)
def test_unusable_csvs_are_reported_with_their_path(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(AuxLabelError, match=message) as raised:
        openface_aux([Path("bad.jpg")], csv_dir=tmp_path)
    assert str(path) in str(raised.value)


def test_the_command_line_asks_for_aus_of_each_image(tmp_path):
    assert openface_command("/opt/OpenFace/FaceLandmarkImg", tmp_path / "in", tmp_path / "out") == [
        "/opt/OpenFace/FaceLandmarkImg",
        "-fdir",
        str(tmp_path / "in"),
        "-out_dir",
        str(tmp_path / "out"),
        "-aus",
    ]


# A stand-in for FaceLandmarkImg. Each input "image" is a text file holding the intensity
# levels of the faces in it ("1.5", "0.4 2.0"), "none" for no face, or "crash".
_FAKE = """#!{python}
import json, os, sys
from pathlib import Path
AUS = {aus!r}
PRESENCE = {presence!r}
args = sys.argv[1:]
Path(os.environ["FAKE_OPENFACE_LOG"]).write_text(json.dumps(sys.argv))
fdir, out = Path(args[args.index("-fdir") + 1]), Path(args[args.index("-out_dir") + 1])
out.mkdir(parents=True, exist_ok=True)
for image in sorted(fdir.iterdir()):
    (out / f"{{image.stem}}_of_details.txt").write_text(f"Input:{{image}}\\n")
    text = image.read_text().strip()
    if text == "crash":
        print("Could not open the image: " + str(image))
        print("OpenCV: corrupt JPEG data", file=sys.stderr)
        sys.exit(1)
    if text == "none":
        continue
    header = ["face", "confidence"] + [a + "_r" for a in AUS] + [a + "_c" for a in PRESENCE]
    rows = [", ".join(header)]
    for face, level in enumerate(text.split()):
        confidence = 0.9 + 0.05 * face
        values = [f"{{float(level) + 0.1 * k:.2f}}" for k in range(len(AUS))]
        rows.append(", ".join([str(face), f"{{confidence:.3f}}"] + values + ["1.0"] * 18))
    (out / f"{{image.stem}}.csv").write_text("\\n".join(rows) + "\\n")
"""


@pytest.fixture
def fake_openface(tmp_path, monkeypatch) -> Path:
    binary = tmp_path / "bin" / "FaceLandmarkImg"
    binary.parent.mkdir()
    binary.write_text(_FAKE.format(python=sys.executable, aus=list(AU_NAMES), presence=_PRESENCE))
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("FAKE_OPENFACE_LOG", str(tmp_path / "argv.json"))
    return binary


def _images(root: Path, contents: dict[str, str]) -> list[Path]:
    paths = []
    for name, text in contents.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths


def test_run_openface_runs_the_binary_and_imports_its_csvs(tmp_path, fake_openface):
    images = _images(
        tmp_path / "data",
        {"a/face.jpg": "1.0", "b/face.jpg": "2.0", "a/empty.png": "none", "a/crowd.jpg": "0.4 3.0"},
    )
    images.insert(2, tmp_path / "data" / "gone.jpg")  # listed in the manifest, not on disk
    work = tmp_path / "work"

    aux = run_openface(fake_openface, images, work)

    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == openface_command(fake_openface, work / "in", work / "out")
    assert aux.status.tolist() == [OK, OK, "openface_missing_image", "openface_no_face", OK]
    np.testing.assert_allclose(aux.values[0], _aus(1.0), atol=1e-6)
    np.testing.assert_allclose(aux.values[1], _aus(2.0), atol=1e-6)  # same stem, own CSV
    np.testing.assert_allclose(aux.values[4], _aus(3.0), atol=1e-6)  # the more confident face
    assert sorted(p.name for p in (work / "in").iterdir()) == [
        "000000.jpg",
        "000001.jpg",
        "000003.png",
        "000004.jpg",
    ]

    # A second run starts from empty folders.
    again = run_openface(fake_openface, images[:1], work)
    assert again.status.tolist() == [OK]
    assert sorted(p.name for p in (work / "out").iterdir()) == [
        "000000.csv",
        "000000_of_details.txt",
    ]


def test_a_failing_run_reports_the_command_and_its_output(tmp_path, fake_openface):
    images = _images(tmp_path / "data", {"ok.jpg": "1.0", "broken.jpg": "crash"})
    with pytest.raises(AuxLabelError) as raised:
        run_openface(fake_openface, images, tmp_path / "work")
    message = str(raised.value)
    assert f"{fake_openface} -fdir {tmp_path / 'work' / 'in'}" in message
    assert "exit status 1" in message
    assert "OpenCV: corrupt JPEG data" in message and "Could not open the image" in message


def test_run_openface_needs_an_existing_binary(tmp_path):
    with pytest.raises(
        AuxLabelError, match=r"nowhere/FaceLandmarkImg does not exist; install OpenFace"
    ):
        run_openface(tmp_path / "nowhere" / "FaceLandmarkImg", [], tmp_path / "work")


def test_find_openface_prefers_the_configured_path_then_path(tmp_path, fake_openface, monkeypatch):
    monkeypatch.setenv("PATH", str(fake_openface.parent) + os.pathsep + os.environ.get("PATH", ""))
    assert find_openface(fake_openface) == fake_openface
    assert find_openface(tmp_path / "missing" / "FaceLandmarkImg") == fake_openface
    assert find_openface(None) == fake_openface
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_openface(None) is None


def test_the_aux_stage_passes_the_configured_minimum_confidence(tmp_path, monkeypatch):
    from lightfer.au import annotate as module
    from lightfer.params import AuxParams

    (tmp_path / "csvs" / "raf").mkdir(parents=True)
    csv_dir = tmp_path / "csvs"
    aux = AuxParams(backend="openface", openface_csv_dir=csv_dir, openface_min_confidence=0.9)
    seen = {}
    monkeypatch.setattr(module, "openface_aux", lambda images, **kw: seen.update(kw))

    class _Manifest:
        def __len__(self) -> int:
            return 1

        def image_path(self, row: int) -> Path:
            return tmp_path / "a.png"

    module.annotate(aux, manifest=_Manifest(), crops=None, faces=None, dataset="raf", seed=0)
    assert seen == {"csv_dir": tmp_path / "csvs" / "raf", "min_confidence": 0.9}
