"""train-ldg: the label distribution generator, trained on hard labels (eq. 1) and frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer.losses import build_regime
from lightfer.params import Params
from stages.common import StageSpec, stage_main
from stages.training import load_splits, train_model


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Train the LDG; write `models/<dataset>/ldg.pt` and `reports/<dataset>/train/ldg.*`."""
    return train_model(
        params,
        root,
        run=STAGE.expand(dataset=dataset),
        dataset=dataset,
        model_cfg=params.train.ldg,
        regime=build_regime("sll"),
        seed=params.base.seed,
        splits=load_splits(params, root, dataset),
        soft=None,
        model_path=root / "models" / dataset / "ldg.pt",
        report_stem=root / "reports" / dataset / "train" / "ldg",
    )


STAGE = StageSpec(
    name="train-ldg",
    deps=("stages/train_ldg.py", "stages/training.py", "stages/fingerprint.py",
          "lightfer/training", "lightfer/losses.py", "lightfer/models", "data/{dataset}/faces",
          "data/{dataset}/prepared"),
    outs=("models/{dataset}/ldg.pt", "reports/{dataset}/train/ldg.csv",
          "reports/{dataset}/train/ldg.json"),
    params=("base.seed", "align.crop_size", "train.val_fraction", "train.ldg"),
    run=run,
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
