"""train-ef: EfficientFace in one regime (sll: hard labels; ldl: the LDG's soft labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightfer.losses import Regime, build_regime
from lightfer.params import Params
from stages.common import StageRun, StageSpec, stage_main
from stages.soft_labels import ldg_path, read_soft_labels
from stages.training import Splits, load_splits, load_trained, train_model


def run_name(regime: str, seed: int) -> str:
    return f"ef-{regime}-seed{seed}"


def soft_label_source(
    params: Params, root: Path, dataset: str, splits: Splits
) -> tuple[np.ndarray | None, torch.nn.Module | None]:
    """`(soft, teacher)` for `fit_model`: the cached soft labels, or the LDG to score online."""
    if params.soft_labels.mode == "online":
        return None, load_trained(ldg_path(root, dataset))[0]
    return read_soft_labels(root, dataset, len(splits.crops)), None


def train_ef(
    params: Params,
    root: Path,
    *,
    run: StageRun,
    dataset: str,
    name: str,
    regime: Regime,
    seed: int,
    splits: Splits,
    model_path: Path | None = None,
    report_stem: Path | None = None,
    **fit_args: Any,
) -> dict[str, Any]:
    """Train one EfficientFace as `name`: by default `models/<dataset>/<name>.pt` and
    `reports/<dataset>/train/<name>.{csv,json}`."""
    if "soft" in regime.requires:
        fit_args["soft"], fit_args["teacher"] = soft_label_source(params, root, dataset, splits)
    fit_args.setdefault("soft", None)
    return train_model(
        params, root, run=run, dataset=dataset, model_cfg=params.train.ef, regime=regime,
        seed=seed, splits=splits,
        model_path=model_path or root / "models" / dataset / f"{name}.pt",
        report_stem=report_stem or root / "reports" / dataset / "train" / name, **fit_args,
    )  # fmt: skip


def run(params: Params, root: Path, *, dataset: str, regime: str, seed: int) -> dict[str, Any]:
    """Train one EfficientFace; write `models/<dataset>/ef-<regime>-seed<k>.pt` and reports."""
    return train_ef(
        params, root, run=STAGE.expand(dataset=dataset, regime=regime, seed=seed),
        dataset=dataset, name=run_name(regime, seed), regime=build_regime(regime), seed=seed,
        splits=load_splits(params, root, dataset),
    )  # fmt: skip


STAGE = StageSpec(
    name="train-ef",
    deps=("stages/train_ef.py", "stages/training.py", "stages/fingerprint.py",
          "stages/soft_labels.py", "lightfer/training", "lightfer/losses.py", "lightfer/models",
          "data/{dataset}/faces", "data/{dataset}/prepared", "data/{dataset}/soft_labels.parquet",
          "models/{dataset}/ldg.pt"),
    outs=("models/{dataset}/ef-{regime}-seed{seed}.pt",
          "reports/{dataset}/train/ef-{regime}-seed{seed}.csv",
          "reports/{dataset}/train/ef-{regime}-seed{seed}.json"),
    params=("base.seed", "align.crop_size", "train.val_fraction", "train.ef", "soft_labels"),
    run=run,
    axes=("dataset", "regime", "seed"),
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
