"""The benchmark library: counts, interleaved timing, memory, and the results dict.

These check what the benchmark returns, not how fast anything is: speed is measured by
`scripts/bench_models.py`, never asserted in a test.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from lightfer.bench import (
    count_flops,
    count_parameters,
    evaluate_targets,
    format_device_speed,
    format_markdown,
    measure_device_speed,
    measure_memory,
    measure_tensor_memory,
    measure_throughput,
    run_benchmark,
)
from lightfer.labels import CLASSES
from lightfer.models import create_model, recalibrate_batchnorm
from lightfer.models.checkpoint import save_checkpoint
from lightfer.openvino_export import cpu_supports_bf16


def test_counts_match_the_reference_figures():
    model = create_model("efficientface")
    assert count_parameters(model) == 1_275_293
    assert count_flops(model, 224) / 1e6 == pytest.approx(299.46, abs=0.01)
    assert model.training  # mode restored


def test_interleaved_timing_visits_every_variant_every_round():
    calls = {"a": 0, "b": 0}

    def make(name):
        def call():
            calls[name] += 1

        return call

    rates = measure_throughput(
        {name: make(name) for name in calls}, repeats=3, block_seconds=0.01, warmup_calls=2
    )
    assert set(rates) == {"a", "b"}
    assert all(len(r) == 3 and min(r) > 0 for r in rates.values())
    assert min(calls.values()) >= 2 + 3


def test_tensor_memory_counts_weights_and_activations():
    ef, r18 = create_model("efficientface"), create_model("resnet18")
    small, large = (measure_tensor_memory(m, image_size=64) for m in (ef, r18))
    assert small["weights_mb"] == pytest.approx(1_293_473 * 4 / 2**20, rel=1e-3)
    assert 0 < small["activations_mb"] < large["activations_mb"]
    assert small["mb"] == pytest.approx(
        small["weights_mb"] + small["input_mb"] + small["activations_mb"]
    )


@pytest.mark.slow
def test_rss_memory_probe_reports_growth():
    memory = measure_memory("eager", "efficientface", image_size=64)
    assert memory["mb"] > 4.9  # at least the weights
    assert memory["peak_reset"] in (True, False)


SIZE = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A seeded EfficientFace saved as a checkpoint at the bench's size, and a face cache
    of smooth random crops (8 training, 12 test, one unusable test row)."""
    root = tmp_path_factory.mktemp("trained")
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, SIZE, SIZE, generator=generator) for _ in range(2)]
    model = recalibrate_batchnorm(create_model("efficientface"), batches).eval()
    checkpoint = save_checkpoint(
        root / "ef.pt",
        model,
        arch="efficientface",
        classes=CLASSES,
        image_size=SIZE,
        mean=(0.5, 0.45, 0.4),
        std=(0.25, 0.22, 0.21),
    )
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (21, SIZE, SIZE, 3), dtype=np.uint8)
    crops = np.stack([cv2.GaussianBlur(image, (0, 0), 3) for image in noise])
    faces = root / "faces"
    faces.mkdir()
    np.save(faces / "faces.npy", crops)
    split = ["train"] * 8 + ["test"] * 13
    status = ["ok"] * 20 + ["no_face"]
    table = pa.table({"split": split, "status": status, "row": np.arange(21, dtype=np.int64)})
    pq.write_table(table, faces / "faces.parquet")
    return checkpoint, faces


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Random weights, eager and ONNX Runtime fp32 only, at 1 and 2 threads: seconds."""
    return run_benchmark(
        workdir=tmp_path_factory.mktemp("bench"),
        models=("efficientface",),
        image_size=SIZE,
        batch_sizes=(1,),
        threads=(1, 2),
        repeats=2,
        block_seconds=0.02,
        int8=False,
        openvino=False,
        memory=False,
        gpu=True,
    )


@pytest.fixture(scope="module")
def trained_results(tmp_path_factory, trained):
    """A trained model on every deployment runtime, with agreement: about 20 s."""
    checkpoint, faces = trained
    return run_benchmark(
        workdir=tmp_path_factory.mktemp("bench"),
        models=("efficientface",),
        image_size=SIZE,
        batch_sizes=(1,),
        threads=(1,),
        repeats=1,
        block_seconds=0.02,
        memory=False,
        gpu=False,
        checkpoint=checkpoint,
        faces=faces,
    )


def test_results_are_plain_json(results):
    assert json.loads(json.dumps(results, allow_nan=False)) == results


def test_results_cover_every_runtime_at_every_thread_count(results):
    assert results["models"]["efficientface"]["params"] == 1_275_293
    cpu = results["cpu"]["efficientface"]
    assert set(cpu) == {"eager", "eager_official", "onnx_fp32"}
    for per_group in cpu.values():
        assert set(per_group) == {"b1-t1", "b1-t2"}
        assert min(entry["images_per_s"] for entry in per_group.values()) > 0
    assert results["memory"]["efficientface"]["tensors"]["mb"] > 0
    info = results["models"]["efficientface"]
    assert info["onnx_fp32_mb"] < 1.1 * info["weights_mb"]
    assert set(results["gemm"]["gflops"]) == set(results["others_cpu"]) == {"b1-t1", "b1-t2"}
    assert min(results["gemm"]["gflops"].values()) > 0
    fraction = results["flop_bound"]["efficientface"]["fraction"]
    assert set(fraction) == {f"{r}/b1-t{n}" for r in cpu for n in (1, 2)}
    assert results["agreement"] is None  # random weights


@pytest.mark.slow
def test_a_trained_model_runs_on_every_deployment_runtime(trained_results):
    deployment = trained_results["settings"]["deployment_runtimes"]
    bf16 = ["openvino_bf16"] if cpu_supports_bf16() else []
    assert deployment == ["onnx_fp32", "onnx_int8", "openvino_fp32", *bf16, "openvino_int8"]
    cpu = trained_results["cpu"]["efficientface"]
    assert set(cpu) == {"eager", "eager_official", *deployment}
    assert min(per_group["b1-t1"]["images_per_s"] for per_group in cpu.values()) > 0
    info = trained_results["models"]["efficientface"]
    assert info["onnx_int8_mb"] < info["onnx_fp32_mb"] < 1.1 * info["weights_mb"]
    assert info["openvino_int8_mb"] < info["openvino_fp32_mb"] < 1.1 * info["weights_mb"]


@pytest.mark.slow
def test_agreement_compares_every_runtime_with_pytorch_on_the_test_faces(trained_results, trained):
    agreement = trained_results["agreement"]
    assert (agreement["model"], agreement["image_size"]) == ("efficientface", SIZE)
    assert agreement["checkpoint"] == str(trained[0])
    runtimes = agreement["runtimes"]
    assert list(runtimes) == trained_results["settings"]["deployment_runtimes"]
    assert {entry["images"] for entry in runtimes.values()} == {12}  # the usable test rows
    for runtime in ("onnx_fp32", "openvino_fp32"):  # float32: the same outputs
        assert runtimes[runtime]["top1"] == 1.0
        assert runtimes[runtime]["max_abs_prob_diff"] < 1e-4
    for runtime in ("onnx_int8", "openvino_int8"):
        assert 0 < runtimes[runtime]["max_abs_prob_diff"] < 1
        assert 0 <= runtimes[runtime]["top1"] <= 1
    text = format_markdown(trained_results)
    lines = text.splitlines()
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| efficientface | o")}
    assert rows["onnx_fp32"].endswith("| 100.0% | 0.000 |")
    for runtime in trained_results["settings"]["deployment_runtimes"]:
        assert rows[runtime].count("%") == 2  # the FLOP-bound share and the agreement
    assert "on 12 test faces of" in text and f"at {SIZE} px: the timed files." in text


def test_gpu_is_skipped_with_a_note_without_cuda(results):
    if torch.cuda.is_available():
        assert results["gpu"]["batches_per_s"]["efficientface"] > 0
    else:
        assert results["gpu"] == {
            "available": False,
            "note": "skipped: CUDA is not available on this machine",
        }


def test_targets_need_their_models_and_name_their_thread_count(results):
    # resnet50 and shufflenet were not run: only EfficientFace's own targets can be evaluated
    assert set(results["targets"]) == {
        "ef_deployment_vs_eager@1t",
        "ef_deployment_vs_eager@2t",
        "ef_deployment_vs_official_1t@1t",
        "ef_deployment_vs_official_2t@2t",
    }
    official = results["targets"]["ef_deployment_vs_official_2t@2t"]
    assert official["description"] == (
        "EfficientFace deployment >= 5x the official-style eager EfficientFace (batch 1, 2 threads)"
    )
    assert (official["threads"], official["bound"], official["runtime"]) == (2, 5.0, "onnx_fp32")
    fraction = results["flop_bound"]["efficientface"]["fraction"]
    assert official["flop_bound_share"] == fraction["onnx_fp32/b1-t2"]


def _fake_speed(images_per_s: float) -> dict:
    return {"images_per_s": images_per_s, "blocks": [images_per_s, images_per_s]}


def test_targets_compare_same_run_medians(results):
    fake = json.loads(json.dumps(results))
    fake["cpu"]["resnet50"] = {"eager": {"b1-t1": {"images_per_s": 10.0, "blocks": [10, 10]}}}
    fake["cpu"]["efficientface"]["eager"]["b1-t1"] = {"images_per_s": 50.0, "blocks": [40, 60]}
    fake["flop_bound"]["efficientface"]["fraction"]["eager/b1-t1"] = 0.25
    target = evaluate_targets(fake)["ef_vs_resnet50_eager@1t"]
    assert (target["value"], target["met"], target["runtime"]) == (5.0, True, "eager")
    assert target["per_round"] == {"median": 5.0, "min": 4.0, "max": 6.0}
    assert target["flop_bound_share"] == 0.25


def test_the_deployment_target_takes_the_fastest_runtime_that_agrees(results):
    fake = json.loads(json.dumps(results))
    cpu = fake["cpu"]["efficientface"]
    for runtime, speed in [("eager_official", 10), ("onnx_fp32", 45), ("onnx_int8", 90)]:
        cpu[runtime] = {"b1-t1": _fake_speed(speed)}
    top1 = {"onnx_fp32": 1.0, "onnx_int8": 0.98}
    fake["agreement"] = {
        "model": "efficientface",
        "runtimes": {r: {"top1": a} for r, a in top1.items()},
    }
    target = evaluate_targets(fake)["ef_deployment_vs_official_1t@1t"]
    assert (target["runtime"], target["value"], target["met"]) == ("onnx_fp32", 4.5, True)
    fake["agreement"]["runtimes"]["onnx_int8"]["top1"] = 0.99
    target = evaluate_targets(fake)["ef_deployment_vs_official_1t@1t"]
    assert (target["runtime"], target["value"]) == ("onnx_int8", 9.0)


def test_markdown_has_the_tables(results):
    text = format_markdown(results)
    assert "| efficientface | 1.28 | 24.5 |" in text
    header = (
        "| model | runtime | CPU img/s b1 1t | CPU img/s b1 2t | FLOP bound reached b1 1t "
        "| FLOP bound reached b1 2t | top-1 agreement with fp32 | max abs prob diff |"
    )
    assert header in text
    runtime_rows = ("| efficientface | e", "| efficientface | o")  # eager*, onnx_*, openvino_*
    rows = {
        line.split(" | ")[1]: line for line in text.splitlines() if line.startswith(runtime_rows)
    }
    assert set(rows) == {"eager", "eager_official", "onnx_fp32"}
    assert rows["onnx_fp32"].endswith("| - | - |")  # random weights: no agreement
    assert "Agreement: not measured (random weights)" in text
    assert "Other processes' CPU use while each group was timed (cores): b1 1t " in text
    assert (
        "| target | runtime | ratio of medians | per-round ratios: median (min-max) "
        "| its FLOP bound reached | met |"
    ) in text
    for threads in ("1 thread", "2 threads"):
        assert f"| EfficientFace deployment >= 3.5x its eager (batch 1, {threads}) |" in text
    assert "official-style eager EfficientFace (batch 1, 1 thread) | onnx_fp32 |" in text
    assert text.endswith("\n")


def test_checkpoint_and_faces_go_together(tmp_path, trained):
    with pytest.raises(ValueError, match="pass checkpoint and faces together"):
        run_benchmark(workdir=tmp_path, models=("efficientface",), checkpoint=trained[0])


@pytest.fixture(scope="module")
def device_speed():
    """The GPU check's speed comparison, run on the CPU at tiny sizes (32 px, batch 2)."""
    return measure_device_speed(
        ("efficientface", "resnet50"),
        device="cpu",
        image_size=32,
        batch_sizes=(2,),
        repeats=1,
        block_seconds=0.0,
        warmup_calls=1,
    )


def test_device_speed_has_a_row_per_mode_batch_and_precision(device_speed):
    assert json.loads(json.dumps(device_speed, allow_nan=False)) == device_speed
    assert (device_speed["device_type"], device_speed["models"]) == (
        "cpu",
        ["efficientface", "resnet50"],
    )
    assert device_speed["channels_last"] is True  # what training picks on the CPU too
    assert [(row["mode"], row["batch"], row["amp"]) for row in device_speed["rows"]] == [
        ("train", 2, "off"),
        ("train", 2, "bfloat16"),
        ("infer", 2, "off"),
        ("infer", 2, "bfloat16"),
    ]
    for row in device_speed["rows"]:
        speed = row["batches_per_s"]
        assert min(speed.values()) > 0
        assert set(row["ratios"]) == {"resnet50"}
        ratio = row["ratios"]["resnet50"]["value"]
        assert ratio == pytest.approx(speed["efficientface"] / speed["resnet50"])


def test_device_speed_markdown_has_one_table_row_per_variant(device_speed):
    text = format_device_speed(device_speed)
    lines = text.splitlines()
    header = (
        "| mode | batch | AMP | efficientface batch/s | resnet50 batch/s "
        "| efficientface/resnet50 (per-round range) |"
    )
    assert header in lines
    rows = [line for line in lines if line.startswith(("| train |", "| infer |"))]
    assert [row.split(" | ")[:3] for row in rows] == [
        ["| train", "2", "off"],
        ["| train", "2", "bfloat16"],
        ["| infer", "2", "off"],
        ["| infer", "2", "bfloat16"],
    ]
    assert all(len(row.split(" | ")) == 6 for row in rows)
    assert text.endswith("\n")


def test_markdown_shows_the_gpu_speed_table_when_measured(results, device_speed):
    gpu_row = next(r for r in device_speed["rows"] if (r["mode"], r["amp"]) == ("infer", "off"))
    measured = {
        **results,
        "gpu": {
            "available": True,
            "device": "a GPU",
            "batch_size": 2,
            "batches_per_s": gpu_row["batches_per_s"],
            "speed": device_speed,
        },
    }
    text = format_markdown(measured)
    fp32 = f"{gpu_row['batches_per_s']['efficientface']:,.1f}"
    assert f"| efficientface | 1.28 | 24.5 | {fp32} |" in text
    assert "GPU batch/s: float32 inference on a GPU, batch 2." in text
    assert format_device_speed(device_speed).rstrip("\n") in text
