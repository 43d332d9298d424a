"""Structured pruning of a fine-tuned BERT: whole attention heads and whole encoder layers.

Importance is measured on training batches with a first-order Taylor score (Molchanov et al. 2019,
as used for heads by Michel et al. 2019): for head ``h`` of layer ``l`` the score is
``|sum(a_lh * dL/da_lh)|`` over the tokens, where ``a_lh`` is the head's context output - the loss
change if the head were removed. A layer's score is the sum of its heads'. The least important layers
are removed, then the least important fraction of the remaining heads; the Linear layers are sliced,
so the exported graph is really smaller (no masks). A short recovery fine-tune follows, optionally
distilled from the unpruned model (KL on softened token logits).

``PRUNE="layers=2,heads=0.25,epochs=1,distill=0.5"`` on ``make build`` (see :class:`PruneSettings`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ner_triton.errors import ConfigError
from ner_triton.settings import PruneSettings

log = logging.getLogger(__name__)


def encoder_layers(model: Any) -> list[Any]:
    return list(model.encoder.base_model.encoder.layer)


def heads_per_layer(model: Any) -> list[int]:
    return [int(layer.attention.self.num_attention_heads) for layer in encoder_layers(model)]


def head_importance(model: Any, batches: Sequence[tuple[dict[str, torch.Tensor], torch.Tensor]]) -> list[torch.Tensor]:
    """Taylor importance ``[heads]`` of every layer's heads on ``batches`` of (inputs, labels)."""
    layers = encoder_layers(model)
    captured: dict[int, torch.Tensor] = {}

    def hook(index: int) -> Any:
        def fn(_module: nn.Module, _inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            out.retain_grad()
            captured[index] = out

        return fn

    handles = [layer.attention.self.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    scores = [torch.zeros(h) for h in heads_per_layer(model)]
    loss_fn = nn.CrossEntropyLoss(ignore_index=-100)
    model.eval()
    try:
        for inputs, target in tqdm(batches, desc="head importance", unit="batch", leave=False):
            model.zero_grad(set_to_none=True)
            logits = model(**inputs)
            loss_fn(logits.view(-1, logits.shape[-1]), target.view(-1)).backward()
            for i, out in captured.items():
                assert out.grad is not None
                h = scores[i].numel()
                prod = (out * out.grad).reshape(*out.shape[:-1], h, -1)  # [batch, seq, heads, dim]
                scores[i] += prod.sum(dim=(0, 1, 3)).abs().detach()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return scores


def _slice_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``linear`` keeping only ``keep`` output rows (dim 0) or input columns (dim 1)."""
    weight = linear.weight.data.index_select(dim, keep).clone()
    bias = linear.bias.data.clone() if linear.bias is not None else None
    if dim == 0 and bias is not None:
        bias = bias.index_select(0, keep).clone()
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    out.weight.data.copy_(weight)
    if bias is not None:
        out.bias.data.copy_(bias)
    return out


def keep_heads(model: Any, kept: Sequence[Sequence[int]]) -> None:
    """Keep only heads ``kept[l]`` of each layer ``l`` (slices q/k/v rows and the output projection's columns)."""
    for layer, heads in zip(encoder_layers(model), kept, strict=True):
        attn = layer.attention.self
        size = int(attn.attention_head_size)
        if len(heads) == attn.num_attention_heads:
            continue
        index = torch.tensor([h * size + d for h in sorted(heads) for d in range(size)], dtype=torch.long)
        attn.query = _slice_linear(attn.query, index, 0)
        attn.key = _slice_linear(attn.key, index, 0)
        attn.value = _slice_linear(attn.value, index, 0)
        layer.attention.output.dense = _slice_linear(layer.attention.output.dense, index, 1)
        attn.num_attention_heads = len(heads)
        attn.all_head_size = len(heads) * size


def drop_layers(model: Any, drop: Sequence[int]) -> None:
    """Remove encoder layers ``drop`` (indices) and renumber the rest."""
    layers = encoder_layers(model)
    kept = [layer for i, layer in enumerate(layers) if i not in set(drop)]
    for i, layer in enumerate(kept):
        if hasattr(layer.attention.self, "layer_idx"):
            layer.attention.self.layer_idx = i
    model.encoder.base_model.encoder.layer = nn.ModuleList(kept)
    model.encoder.config.num_hidden_layers = len(kept)


def plan(scores: list[torch.Tensor], settings: PruneSettings) -> tuple[list[int], list[list[int]]]:
    """(layers to drop, heads to keep per remaining layer) from importance scores."""
    n = len(scores)
    if settings.layers >= n:
        raise ConfigError(f"PRUNE: cannot remove {settings.layers} of {n} layers; keep at least one.")
    totals = [float(s.sum()) for s in scores]
    drop = sorted(sorted(range(n), key=lambda i: totals[i])[: settings.layers])
    remaining = [i for i in range(n) if i not in drop]
    candidates = [(float(scores[i][h]), i, h) for i in remaining for h in range(scores[i].numel())]
    n_remove = round(settings.heads * len(candidates))
    removed: set[tuple[int, int]] = set()
    for _, i, h in sorted(candidates):
        if len(removed) >= n_remove:
            break
        if sum(1 for j, _ in removed if j == i) + 1 < scores[i].numel():  # keep at least one head per layer
            removed.add((i, h))
    kept = [[h for h in range(scores[i].numel()) if (i, h) not in removed] for i in remaining]
    return drop, kept


def prune_model(
    model: Any, batches: Sequence[tuple[dict[str, torch.Tensor], torch.Tensor]], settings: PruneSettings
) -> dict[str, Any]:
    """Prune ``model`` in place by importance on ``batches``; returns what was removed."""
    params_before = sum(p.numel() for p in model.parameters())
    scores = head_importance(model, batches)
    drop, kept = plan(scores, settings)
    drop_layers(model, drop)
    keep_heads(model, kept)
    params_after = sum(p.numel() for p in model.parameters())
    summary = {
        "settings": settings.describe(),
        "dropped_layers": drop,
        "heads_per_layer": heads_per_layer(model),
        "parameters_before": params_before,
        "parameters_after": params_after,
        "layer_importance": [round(float(s.sum()), 4) for s in scores],
    }
    log.info("pruned: dropped layers %s, heads per layer %s, parameters %d -> %d", drop,
             summary["heads_per_layer"], params_before, params_after)  # fmt: skip
    return summary


def sample_batches(
    encodings: Sequence[Any], label_rows: Sequence[list[int]], n: int, batch_size: int, seed: int, use_casing: bool
) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """``n`` random training batches as model inputs and label tensors (for importance scores)."""
    from ner_triton.alignment import pad_batch
    from ner_triton.pipeline.finetune import label_tensor
    from ner_triton.schema import CASING_IDS

    rng = random.Random(seed)
    order = list(range(len(encodings)))
    rng.shuffle(order)
    out = []
    for k in range(min(n, -(-len(order) // batch_size))):
        idx = order[k * batch_size : (k + 1) * batch_size]
        inputs = {name: torch.from_numpy(v) for name, v in pad_batch([encodings[i] for i in idx]).items()}
        if not use_casing:
            inputs.pop(CASING_IDS)
        out.append((inputs, label_tensor([encodings[i] for i in idx], [label_rows[i] for i in idx])))
    return out
