"""The speed variants of the V3 model: each a few config overrides, off by default until a GPU
measures them (stage 4 times each beside the reference, in the same process).

They are why the estimate of 55-70 windows/s on an A100 (batch 64) falls short of the goal of 500
on an H200: memory traffic of the Mamba-2 streams at head widths 8 and 4 (mamba_ssm re-reads each
chunk's CB matrix per head), the TCN's full-rate 512-channel layers (62.75 of 75.4 GMAC per
window), and cuSOLVER's batched eigh behind the PE. ``set_flags`` gives each as ``--set`` flags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from szdet.config import Config, ModelConfig


def widest_head(d_inner: int, at_most: int) -> int:
    """The widest head of at most ``at_most`` channels that divides ``d_inner`` into whole heads."""
    return max(w for w in range(1, min(d_inner, at_most) + 1) if d_inner % w == 0)


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    overrides: Callable[[ModelConfig], dict[str, Any]]  # model fields, given the reference's


def _wide_heads(m: ModelConfig) -> dict[str, Any]:
    return {
        "node_headdim": widest_head(m.expand * m.node_dim, 32),
        "edge_headdim": widest_head(m.expand * m.edge_dim, 16),
    }


_SINGLE: tuple[Variant, ...] = (
    Variant("wide_heads", "Mamba-2 heads of 32 (node) and 16 (edge) channels, same d_inner", _wide_heads),
    Variant("multirate_tcn", "the TCN halves its rate every 2 layers, same receptive field",
            lambda m: {"tcn_pool_every": 2}),
    Variant("fused_tcn", "channels-last TCN, compiled GroupNorm+GELU+residual, bf16 between blocks",
            lambda m: {"tcn_fused": True}),
    Variant("jacobi_pe", "the PE's eigenvectors by batched Jacobi in plain tensor ops",
            lambda m: {"eigensolver": "jacobi"}),
    Variant("pe_every_4", "the PE of every 4th step, held over 4 steps",
            lambda m: {"pe_every_steps": 4}),
)  # fmt: skip


def _all(m: ModelConfig) -> dict[str, Any]:
    return {key: value for v in _SINGLE for key, value in v.overrides(m).items()}


VARIANTS: tuple[Variant, ...] = (*_SINGLE, Variant("combined", "all of the above", _all))


def variant_config(cfg: Config, variant: Variant) -> Config:
    """``cfg`` with the variant's overrides, validated as a config file's values would be."""
    dumped = cfg.model_dump()
    dumped["model"].update(variant.overrides(cfg.model))
    return Config.model_validate(dumped)


def set_flags(cfg: Config, variant: Variant) -> list[str]:
    """The variant as `szdet train` flags, e.g. ["--set", "model.tcn_pool_every=2"]."""
    flags = []
    for key, value in variant.overrides(cfg.model).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        flags += ["--set", f"model.{key}={text}"]
    return flags
