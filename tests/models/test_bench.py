"""The benchmark library: counts, interleaved timing, memory, and the results dict.

These check what the benchmark returns, not how fast anything is: speed is measured by
`scripts/bench_models.py`, never asserted in a test.
"""

from __future__ import annotations

import json

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
from lightfer.models import create_model


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


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return run_benchmark(
        workdir=tmp_path_factory.mktemp("bench"),
        models=("efficientface",),
        image_size=64,
        batch_sizes=(1, 2),
        repeats=2,
        block_seconds=0.02,
        memory=False,
        gpu=True,
    )


def test_results_are_plain_json(results):
    assert json.loads(json.dumps(results, allow_nan=False)) == results


def test_results_cover_every_model_runtime_and_batch(results):
    assert results["models"]["efficientface"]["params"] == 1_275_293
    for runtime in ("eager", "onnx_fp32", "onnx_int8"):
        for batch in ("b1", "b2"):
            assert results["cpu"]["efficientface"][runtime][batch]["images_per_s"] > 0
    assert results["memory"]["efficientface"]["tensors"]["mb"] > 0
    info = results["models"]["efficientface"]
    assert info["onnx_int8_mb"] < info["onnx_fp32_mb"] < 1.1 * info["weights_mb"]
    assert set(results["gemm"]["gflops"]) == {"b1", "b2"}
    assert min(results["gemm"]["gflops"].values()) > 0
    fraction = results["flop_bound"]["efficientface"]["fraction"]
    assert set(fraction) == {"eager/b1", "eager/b2", "onnx_fp32/b1", "onnx_fp32/b2"}


def test_gpu_is_skipped_with_a_note_without_cuda(results):
    if torch.cuda.is_available():
        assert results["gpu"]["batches_per_s"]["efficientface"] > 0
    else:
        assert results["gpu"] == {
            "available": False,
            "note": "skipped: CUDA is not available on this machine",
        }


def test_targets_need_their_models(results):
    # resnet50 and shufflenet were not run: only the deployment target can be evaluated
    assert set(results["targets"]) == {"ef_deployment_vs_eager"}


def test_targets_compare_same_run_medians(results):
    fake = json.loads(json.dumps(results))
    fake["cpu"]["resnet50"] = {"eager": {"b1": {"images_per_s": 10.0, "blocks": [10.0, 10.0]}}}
    fake["cpu"]["efficientface"]["eager"]["b1"] = {"images_per_s": 50.0, "blocks": [40, 60]}
    target = evaluate_targets(fake)["ef_vs_resnet50_eager"]
    assert (target["value"], target["met"]) == (5.0, True)
    assert target["per_round"] == {"median": 5.0, "min": 4.0, "max": 6.0}


def test_markdown_has_the_tables(results):
    text = format_markdown(results)
    assert "| efficientface | 1.28 | 24.5 |" in text
    assert "| efficientface | onnx_int8 |" in text
    assert "| target | ratio of medians | per-round ratios: median (min-max) | met |" in text
    assert text.endswith("\n")


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
