"""Typed training settings, free of torch so that the params schema can embed them cheaply.

Neither model names a field `size` or `nfiles`: DVC's run-cache drops such keys from a
stage's hash (treeverse/dvc#10296).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AugmentConfig(BaseModel):
    """Training-time augmentation of uint8 face crops."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop: Literal["pad", "resized", "none"] = Field(
        "pad",
        description="pad: pad the crop and cut it back at a random offset; resized: "
        "RandomResizedCrop as in the official EfficientFace code; none: no crop",
    )
    padding: int = Field(4, ge=0, le=64, description="pixels of zero padding for crop=pad")
    scale_min: float = Field(
        0.08, gt=0.0, le=1.0, description="smallest crop area fraction for crop=resized"
    )
    ratio_max: float = Field(
        4 / 3,
        ge=1.0,
        le=4.0,
        description="widest aspect ratio (and 1/it the tallest) for crop=resized",
    )
    flip: bool = Field(True, description="flip each image horizontally with probability 1/2")


class TrainConfig(BaseModel):
    """How a model is trained: optimiser, schedule, epochs, batches, augmentation, stopping.

    Defaults follow the paper's EfficientFace-on-RAF-DB row (docs/method.md, section 6)
    where it has one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(100, ge=1, le=10_000, description="training epochs")
    batch_size: int = Field(128, ge=2, le=8192, description="samples per training batch")
    optimizer: Literal["radam", "adam", "sgd"] = Field("radam", description="optimiser")
    lr: float = Field(1e-3, gt=0.0, le=10.0, description="learning rate (onecycle: max lr)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    beta1: float = Field(0.9, ge=0.0, lt=1.0, description="Adam/RAdam first-moment decay")
    beta2: float = Field(0.999, ge=0.0, lt=1.0, description="Adam/RAdam second-moment decay")
    eps: float = Field(1e-8, gt=0.0, le=1.0, description="Adam/RAdam denominator epsilon")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="L2 weight decay")
    schedule: Literal["onecycle", "plateau", "step", "constant"] = Field(
        "plateau",
        description="onecycle: 1-cycle per batch; plateau: x plateau_factor when validation "
        "accuracy stalls; step: x step_gamma every step_every epochs; constant",
    )
    step_every: int = Field(15, ge=1, le=10_000, description="epochs between step decays")
    step_gamma: float = Field(0.1, gt=0.0, le=1.0, description="step decay factor")
    plateau_patience: int = Field(
        5, ge=0, le=1000, description="epochs without validation gain before a plateau decay"
    )
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0, description="plateau decay factor")
    early_stopping_patience: int = Field(
        0,
        ge=0,
        le=10_000,
        description="stop after this many epochs without validation gain (0: never stop early)",
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0.0, le=1.0, description="validation-accuracy gain that counts as improvement"
    )
    grad_clip_norm: float = Field(
        0.0, ge=0.0, le=1e6, description="clip the gradient norm to this value (0: off)"
    )
    balanced: bool = Field(False, description="class-balanced resampling (AffectNet)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="augmentation")
    amp: Literal["auto", "off", "float16", "bfloat16"] = Field(
        "auto",
        description="autocast dtype; auto: bfloat16 on a CUDA GPU that has it, else float16 "
        "on CUDA, off on the CPU (true/false are read as auto/off)",
    )
    grad_scaler: Literal["auto"] | bool = Field(
        "auto", description="scale the loss against float16 underflow; auto: with float16 AMP"
    )
    channels_last: Literal["auto"] | bool = Field(
        "auto", description="model and batches in channels-last memory; auto: on (CPU and CUDA)"
    )
    sync_batchnorm: Literal["auto"] | bool = Field(
        "auto", description="batch norm statistics over every rank; auto: DDP on CUDA"
    )
    pin_memory: Literal["auto"] | bool = Field(
        "auto", description="page-locked batches for asynchronous GPU copies; auto: on CUDA"
    )
    augment_on_device: Literal["auto"] | bool = Field(
        "auto",
        description="the loader yields uint8 crops and the device crops, flips and normalises "
        "them (the same pixels as the CPU path); auto: on CUDA",
    )
    max_steps_per_epoch: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="stop each epoch after this many optimiser steps (0: the whole split); "
        "for dry runs of a configuration",
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of order and augmentation")
    num_workers: int = Field(2, ge=0, le=64, description="data-loader worker processes")

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_from_bool(cls, value: object) -> object:
        """`amp: true/false`, the switch's earlier spelling, means auto/off."""
        if isinstance(value, bool):
            return "auto" if value else "off"
        return value
