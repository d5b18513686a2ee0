"""LoRA adapters on SAM's image encoder, through Hugging Face ``peft``.

LoRA (Hu et al., 2021) adds a trainable low-rank update ``B @ A`` (rank r) beside a frozen linear layer,
so adapting the encoder trains a few thousand numbers instead of millions, and the adapter can be saved,
shipped and loaded on its own. Here it goes on the fused ``attn.qkv`` projection of the encoder's ViT
blocks: peft wraps that one ``nn.Linear``, so the update covers the query, key and value slices alike
(SAM-LoRA variants that adapt only q and v need a custom split of the fused layer).

:func:`add_encoder_lora` calls :func:`peft.inject_adapter_in_model` on the whole :class:`Sam`, which also
freezes every weight that is not a LoRA weight: prompt encoder, mask decoder and the encoder's own
weights stay bit-identical during training.

Cached embeddings: an encoder with adapters computes different embeddings under the same model name;
do not serve it embeddings cached before the adapters changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import Sam

from samlib.errors import InvalidInputError, SamlibError
from samlib.utils import torch_load_safe, torch_save_atomic

__all__ = [
    "ADAPTER_NAME",
    "add_encoder_lora",
    "adapter_state_dict",
    "encoder_lora_targets",
    "has_lora",
    "load_adapters",
    "lora_parameters",
    "merge_adapters",
    "save_adapters",
]

ADAPTER_NAME = "default"
_FORMAT = "samlib-lora-1"


def encoder_lora_targets(sam: Sam, blocks: Iterable[int] | None = None) -> list[str]:
    """Module names of the encoder blocks' ``attn.qkv`` layers, e.g. ``image_encoder.blocks.1.attn.qkv``.

    Arguments:
      blocks (Iterable[int] | None): block indices; None = from the second block to the last (PointSAM).
    """
    depth = len(sam.image_encoder.blocks)
    chosen = list(range(1, depth)) if blocks is None else sorted(set(int(b) for b in blocks))
    if not chosen or chosen[0] < 0 or chosen[-1] >= depth:
        raise InvalidInputError(f"blocks must be a non-empty subset of 0 .. {depth - 1}, got {chosen}.")
    return [f"image_encoder.blocks.{i}.attn.qkv" for i in chosen]


def has_lora(model: torch.nn.Module) -> bool:
    """Whether peft LoRA layers have been injected into ``model``."""
    return any("lora_A" in name for name, _ in model.named_parameters())


def add_encoder_lora(
    sam: Sam,
    rank: int = 4,
    alpha: float | None = None,
    blocks: Iterable[int] | None = None,
    dropout: float = 0.0,
) -> list[str]:
    """Inject LoRA layers into the image encoder's ``attn.qkv`` projections, in place.

    Only the LoRA weights stay trainable afterwards (``requires_grad``); everything else is frozen. The B
    matrices start at zero, so the adapted model computes exactly what the original did until trained.

    Arguments:
      sam (Sam): the model (any SAM size: the blocks are read from it).
      rank (int): LoRA rank r (PointSAM: 4).
      alpha (float | None): LoRA scaling numerator (update = alpha / r * B A); None = ``rank`` (scale 1).
      blocks (Iterable[int] | None): encoder blocks to adapt; None = the second to the last.
      dropout (float): dropout on the LoRA branch's input.

    Returns:
      (list[str]): the adapted module names.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(sam):
        raise SamlibError("This model already has LoRA adapters; load a fresh model to add new ones.")
    if rank < 1:
        raise InvalidInputError(f"rank must be >= 1, got {rank}.")
    targets = encoder_lora_targets(sam, blocks)
    config = LoraConfig(
        r=rank,
        lora_alpha=float(rank if alpha is None else alpha),  # type: ignore[arg-type]  # peft scales by alpha / r
        lora_dropout=dropout,
        target_modules=targets,
    )
    inject_adapter_in_model(config, sam, adapter_name=ADAPTER_NAME)
    for name, p in sam.named_parameters():  # peft freezes the rest already; make it explicit
        p.requires_grad_("lora_" in name)
    sam.samlib_lora = {"rank": rank, "alpha": config.lora_alpha, "targets": targets, "dropout": dropout}
    return targets


def lora_parameters(sam: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The LoRA weights (A and B of every adapted layer), in a fixed order."""
    params = [p for name, p in sam.named_parameters() if "lora_" in name]
    if not params:
        raise SamlibError("The model has no LoRA adapters: call add_encoder_lora(sam) first.")
    return params


def adapter_state_dict(sam: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA weights, as CPU tensors keyed by their parameter names."""
    out = {name: p.detach().cpu().clone() for name, p in sam.named_parameters() if "lora_" in name}
    if not out:
        raise SamlibError("The model has no LoRA adapters: nothing to save.")
    return out


def save_adapters(sam: Sam, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the adapters alone (a few kB) with their configuration; load them with :func:`load_adapters`."""
    config = getattr(sam, "samlib_lora", None)
    if config is None:
        raise SamlibError("The model has no adapters added by add_encoder_lora: nothing to save.")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(
        {"format": _FORMAT, "config": config, "state_dict": adapter_state_dict(sam), "meta": meta or {}}, out
    )
    return out


def load_adapters(sam: Sam, path: str | Path) -> dict[str, Any]:
    """Load adapters saved by :func:`save_adapters` into ``sam`` (adding the LoRA layers if it has none).

    Returns:
      (dict): the saved ``meta``.

    Raises:
      InvalidInputError: if the file is not an adapter file or does not fit this model.
    """
    p = Path(path)
    blob = torch_load_safe(p, "a LoRA adapter file written by samlib.adapters.save_adapters")
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise InvalidInputError(f"{p} is not a samlib LoRA adapter file (written by save_adapters).")
    config = blob["config"]
    if not has_lora(sam):
        depth = len(sam.image_encoder.blocks)
        blocks = [int(t.split(".")[2]) for t in config["targets"]]
        if max(blocks) >= depth:
            raise InvalidInputError(f"{p} adapts encoder block {max(blocks)}, the model has {depth} blocks.")
        add_encoder_lora(sam, config["rank"], config["alpha"], blocks, config["dropout"])
    own = dict(sam.named_parameters())
    state: dict[str, torch.Tensor] = blob["state_dict"]
    missing = sorted(set(n for n in own if "lora_" in n) - set(state))
    unknown = sorted(set(state) - set(own))
    if missing or unknown:
        raise InvalidInputError(f"{p} does not fit this model: missing {missing[:3]}, unknown {unknown[:3]}.")
    with torch.no_grad():
        for name, value in state.items():
            if own[name].shape != value.shape:
                raise InvalidInputError(
                    f"{p}: {name} has shape {tuple(value.shape)}, the model expects {tuple(own[name].shape)}."
                )
            own[name].copy_(value.to(own[name].device, own[name].dtype))
    return dict(blob.get("meta", {}))


def merge_adapters(sam: Sam, names: Sequence[str] | None = None) -> int:
    """Fold every LoRA update into its base weight (``W + alpha / r * B A``), so inference pays nothing.

    The LoRA layers stay in place but are marked merged (peft skips their branch); call
    ``layer.unmerge()`` on them to undo.

    Returns:
      (int): the number of layers merged.
    """
    from peft.tuners.lora import LoraLayer

    count = 0
    for name, module in sam.named_modules():
        if isinstance(module, LoraLayer) and (names is None or name in names) and not module.merged:
            module.merge(safe_merge=True)
            count += 1
    if count == 0 and not has_lora(sam):
        raise SamlibError("The model has no LoRA adapters to merge.")
    return count
