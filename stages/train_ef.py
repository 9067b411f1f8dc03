"""train-ef: EfficientFace in one regime (sll: hard labels; ldl: the LDG's soft labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer.losses import build_regime
from lightfer.params import Params
from stages.common import StageSpec, stage_main
from stages.soft_labels import ldg_path, read_soft_labels
from stages.training import load_splits, load_trained, train_model


def run_name(regime: str, seed: int) -> str:
    return f"ef-{regime}-seed{seed}"


def run(params: Params, root: Path, *, dataset: str, regime: str, seed: int) -> dict[str, Any]:
    """Train one EfficientFace; write `models/<dataset>/ef-<regime>-seed<k>.pt` and reports."""
    splits = load_splits(params, root, dataset)
    regime_terms = build_regime(regime)
    soft, teacher = None, None
    if "soft" in regime_terms.requires:
        if params.soft_labels.mode == "online":
            teacher = load_trained(ldg_path(root, dataset))[0]
        else:
            soft = read_soft_labels(root, dataset, len(splits.crops))
    name = run_name(regime, seed)
    return train_model(
        params,
        root,
        run=STAGE.expand(dataset=dataset, regime=regime, seed=seed),
        dataset=dataset,
        model_cfg=params.train.ef,
        regime=regime_terms,
        seed=seed,
        splits=splits,
        soft=soft,
        model_path=root / "models" / dataset / f"{name}.pt",
        report_stem=root / "reports" / dataset / "train" / name,
        teacher=teacher,
    )


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
