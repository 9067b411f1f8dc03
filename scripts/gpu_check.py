"""The Python half of `scripts/gpu_check.sh`: the check's params, data, speed table and report.

Subcommands (the shell script calls them in this order; each is one process):

* `params --mode gpu|cpu --seed K --out FILE`: the project's params.yaml cut down for the
  check (one synthetic dataset, regime ldl, seed K; 224-pixel crops, a ResNet-50 LDG for
  1 epoch and EfficientFace for 2 epochs with AMP and channels-last on a GPU; tiny sizes
  on the CPU).
* `stages --params FILE`: the stages that train-ef reads from (prepare, align, train-ldg,
  soft-labels) as `python -m stages.<module>` runs them, in the current directory.
* `bench --mode gpu|cpu --out FILE`: `lightfer.bench.measure_device_speed` (EfficientFace
  vs ResNet-50, training and inference, AMP off and on) as JSON.
* `report --mode gpu|cpu --work DIR --out DIR`: `gpu.md` and `gpu.json` from what the steps
  left in the check's project folder and output folder.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import re
import runpy
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATASET, REGIME = "synthetic", "ldl"
RUNS = {"train-ef": 0, "ddp": 1}  # step -> the seed its run trains (its output names)
MODELS = ("efficientface", "resnet50")


@dataclass(frozen=True)
class Sizes:
    """What one mode of the check runs: the speed table's settings and the training run's."""

    device: str
    image_size: int
    batch_sizes: tuple[int, ...]
    repeats: int
    block_seconds: float
    warmup_calls: int
    n_train: int
    n_test: int
    n_subjects: int
    batch_size: int
    num_workers: int
    threads: int
    amp: str


MODES = {
    "gpu": Sizes(
        device="cuda",
        image_size=224,
        batch_sizes=(16, 64),
        repeats=5,
        block_seconds=0.5,
        warmup_calls=5,
        n_train=1000,
        n_test=200,
        n_subjects=200,
        batch_size=64,
        num_workers=8,
        threads=8,
        amp="auto",
    ),
    # A dry run: the same steps at sizes two busy CPU cores get through in seconds; AMP is
    # forced (bfloat16 autocast) since `auto` is off on the CPU.
    "cpu": Sizes(
        device="cpu",
        image_size=32,
        batch_sizes=(2,),
        repeats=1,
        block_seconds=0.0,
        warmup_calls=1,
        n_train=40,
        n_test=20,
        n_subjects=10,
        batch_size=16,
        num_workers=0,
        threads=1,
        amp="bfloat16",
    ),
}


def check_params(sizes: Sizes, seed: int) -> dict[str, Any]:
    """The project's params.yaml with the check's dataset, crops and training run (`seed`:
    the train-ef stage trains every seed of `train.seeds`, so each step gets its own)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    synthetic = params["datasets"][DATASET]
    synthetic.update(n_train=sizes.n_train, n_test=sizes.n_test, n_subjects=sizes.n_subjects)
    params["datasets"] = {DATASET: synthetic}
    params["study"]["datasets"] = [DATASET]
    params["base"]["threads"] = sizes.threads
    params["align"]["crop_size"] = sizes.image_size
    train = params["train"]
    train.update(regimes=[REGIME], seeds=[seed], workers=1)
    train["ldg"]["arch"] = "resnet50"
    for model, epochs in (("ldg", 1), ("ef", 2)):
        train[model]["train"].update(
            epochs=epochs,
            batch_size=sizes.batch_size,
            num_workers=sizes.num_workers,
            amp=sizes.amp,
            channels_last=True,
        )
    return params


def run_stages(params_file: Path) -> int:
    """Run the stages train-ef reads from, each exactly as `python -m stages.<module>` runs
    it (its command line, its `__main__`), in this one process so torch is imported once.

    Returns:
        The first non-zero exit status, else 0.
    """
    for module in ("prepare", "align", "train_ldg", "soft_labels"):
        sys.argv = [f"stages.{module}", "--dataset", DATASET, "--params", str(params_file)]
        try:
            runpy.run_module(f"stages.{module}", run_name="__main__", alter_sys=True)
        except SystemExit as finished:
            if finished.code:
                return finished.code if isinstance(finished.code, int) else 1
    return 0


def run_bench(sizes: Sizes, out: Path) -> None:
    """Time the models and write the `measure_device_speed` results to `out`."""
    import torch

    from lightfer.bench import measure_device_speed

    if sizes.device == "cpu":
        torch.set_num_threads(sizes.threads)
    speed = measure_device_speed(
        MODELS,
        device=sizes.device,
        image_size=sizes.image_size,
        batch_sizes=sizes.batch_sizes,
        repeats=sizes.repeats,
        block_seconds=sizes.block_seconds,
        warmup_calls=sizes.warmup_calls,
    )
    out.write_text(json.dumps(speed, indent=1))


def _environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "driver": None,
    }
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True, check=False)
        env["driver"] = done.stdout.strip().splitlines()[0] if done.returncode == 0 else None
    return env


def _steps(path: Path) -> list[dict[str, Any]]:
    """The shell's step records: `name<TAB>exit status<TAB>seconds<TAB>note` per line."""
    if not path.exists():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    return [
        {"step": name, "status": int(status), "seconds": int(seconds), "note": note}
        for name, status, seconds, note in rows
    ]


def _pytest_summary(log: Path) -> dict[str, Any]:
    """The last line of pytest's output and its FAILED, ERROR and SKIPPED lines."""
    if not log.exists():
        return {"summary": "not run", "details": []}
    lines = [line.strip() for line in log.read_text().splitlines() if line.strip()]
    details = [line for line in lines if line.startswith(("FAILED", "ERROR", "SKIPPED"))]
    return {"summary": lines[-1].strip("= ") if lines else "no output", "details": details}


def _training_run(work: Path, out: Path, step: str) -> dict[str, Any] | None:
    """A train-ef run's summary, per-epoch history and images/s (from its log)."""
    reports, run = work / "reports" / DATASET, Path(f"ef-{REGIME}") / f"seed{RUNS[step]}"
    summary_file = reports / "train" / run.with_suffix(".json")
    if not summary_file.exists():
        return None
    with open(reports / "curves" / run.with_suffix(".csv"), newline="") as history:
        epochs = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(history)]
    log = out / f"{step}.log"
    speeds = re.findall(r"epoch (\d+): .*\((\d+) img/s\)", log.read_text()) if log.exists() else []
    for epoch, speed in speeds:
        epochs[int(epoch) - 1]["images_per_s"] = float(speed)
    return {"summary": json.loads(summary_file.read_text()), "epochs": epochs}


def _number(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _training_markdown(run: dict[str, Any] | None, step: dict[str, Any] | None) -> list[str]:
    if run is None:
        return [f"Not done: {step['note'] if step else 'not run'}."]
    summary = run["summary"]
    header = "| epoch | train img/s | train loss | val accuracy | test accuracy |"
    lines = [
        f"Trained on: {summary.get('device', 'not recorded')}; the stage took "
        f"{step['seconds'] if step else '?'} s (process start and evaluation included). "
        f"Epoch {summary['selected_epoch']} was selected on validation: test accuracy "
        f"{100 * summary['test_accuracy']:.2f}% (val {100 * summary['val_accuracy']:.2f}%).",
        "",
        header,
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {int(e['epoch'])} | {_number(e.get('images_per_s'), 0)} | {e['train_loss']:.4f} "
        f"| {100 * e['val_accuracy']:.2f}% | {100 * e['test_accuracy']:.2f}% |"
        for e in run["epochs"]
    ]
    return lines


def write_report(mode: str, work: Path, out: Path) -> Path:
    """Write `out/gpu.md` and `out/gpu.json` from the steps' outputs; return the Markdown."""
    from lightfer.bench import format_device_speed

    sizes, env = MODES[mode], _environment()
    steps = {row["step"]: row for row in _steps(work / "steps.tsv")}
    bench_file = out / "bench.json"
    speed = json.loads(bench_file.read_text()) if bench_file.exists() else None
    runs = {step: _training_run(work, out, step) for step in RUNS}
    tests = _pytest_summary(out / "pytest.log")
    gpus = ", ".join(env["gpus"]) or "no CUDA device"
    dry = " **Dry run on the CPU at tiny sizes: no GPU figure.**" if mode == "cpu" else ""
    lines = [
        "# GPU check",
        "",
        f"`scripts/gpu_check.sh`, {env['date']}, on {gpus} (driver {env['driver'] or '-'}); "
        f"torch {env['torch']}, CUDA {env['cuda'] or '-'}, cuDNN {env['cudnn'] or '-'}, "
        f"Python {env['python']}.{dry}",
        "",
        "| step | exit status | seconds | note |",
        "|---|---|---|---|",
        *(
            f"| {s['step']} | {s['status']} | {s['seconds']} | {s['note']} |"
            for s in steps.values()
        ),
        f"| all | | {sum(s['seconds'] for s in steps.values())} | |",
        "",
        "## Tests marked gpu",
        "",
        f"`{tests['summary']}`",
        *([""] + [f"- {line}" for line in tests["details"]] if tests["details"] else []),
        "",
        "## Speed: EfficientFace vs ResNet-50",
        "",
        format_device_speed(speed).rstrip("\n") if speed else "Not measured (see the steps).",
        "",
        f"## train-ef at {sizes.image_size} px on the synthetic set",
        "",
        f"{sizes.n_train} training and {sizes.n_test} test faces, a ResNet-50 LDG trained "
        f"1 epoch, EfficientFace regime {REGIME} for 2 epochs at batch {sizes.batch_size}, "
        f"amp: {sizes.amp}, channels_last: true.",
        "",
        *_training_markdown(runs["train-ef"], steps.get("train-ef")),
        "",
        "## NCCL DDP, 2 processes (torchrun)",
        "",
    ]
    if runs["ddp"] is not None:
        lines += _training_markdown(runs["ddp"], steps.get("ddp"))
    else:
        lines.append(f"{steps['ddp']['note'] if 'ddp' in steps else 'not run'}.")
    markdown = out / "gpu.md"
    markdown.write_text("\n".join(lines) + "\n")
    record = {
        "mode": mode,
        "sizes": asdict(sizes),
        "environment": env,
        "steps": list(steps.values()),
        "tests": tests,
        "speed": speed,
        "training": runs,
    }
    (out / "gpu.json").write_text(json.dumps(record, indent=1))
    return markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("params", "bench", "report"):
        command = commands.add_parser(name)
        command.add_argument("--mode", choices=sorted(MODES), required=True)
        command.add_argument("--out", type=Path, required=True)
        if name == "report":
            command.add_argument("--work", type=Path, required=True)
        if name == "params":
            command.add_argument("--seed", type=int, choices=sorted(RUNS.values()), default=0)
    commands.add_parser("stages").add_argument("--params", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "params":
        params = check_params(MODES[args.mode], args.seed)
        args.out.write_text(yaml.safe_dump(params, sort_keys=False))
    elif args.command == "stages":
        return run_stages(args.params)
    elif args.command == "bench":
        run_bench(MODES[args.mode], args.out)
    else:
        write_report(args.mode, args.work, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
