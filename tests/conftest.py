"""Shared fixtures: a tiny random BERT (with the real MiniLM tokenizer) and tiny CoNLL-format files.

The documents are invented (CoNLL-2003 itself stays in ../shared and is never copied into the project)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import TinyBuild, tiny_settings

# Tiny invented documents in the CoNLL-2003 format (4 columns, IOB1), written by the tests themselves.
DOC = """-DOCSTART- -X- O O

ACME NNP I-NP I-ORG
rejects VBZ I-VP O
Danish JJ I-NP I-MISC
plan NN I-NP O
to TO I-VP O
import VB I-VP O
Swiss JJ I-NP I-MISC
cheese NN I-NP O
. . O O

Maria NNP I-NP I-PER
Lindqvist NNP I-NP I-PER

OSLO NNP I-NP I-LOC
2024-03-14 CD I-NP O

The DT I-NP O
U.K. NNP I-NP I-LOC
and CC O O
Peru NNP I-NP I-LOC
Chile NNP I-NP B-LOC
talked VBD I-VP O
with IN I-PP O
Globex NNP I-NP I-ORG
Corp NNP I-NP I-ORG
in IN I-PP O
Madrid NNP I-NP I-LOC
. . O O

"""


@pytest.fixture(scope="session")
def conll_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/valid/test files in the original format (a few repeated documents)."""
    d = tmp_path_factory.mktemp("conll")
    (d / "train.txt").write_text(DOC * 12, encoding="utf-8")
    (d / "valid.txt").write_text(DOC * 2, encoding="utf-8")
    (d / "test.txt").write_text(DOC.replace("-DOCSTART- -X- O O", "-DOCSTART- -X- -X- O") * 2, encoding="utf-8")
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT saved with the default model's fast tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ner_triton.modeling import default_model_path

    d = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, conll_dir: Path) -> TinyBuild:
    """The whole build on the tiny model: artifacts plus an installed model repository."""
    from ner_triton.pipeline.build import build

    artifacts = tmp_path_factory.mktemp("artifacts")
    repository = tmp_path_factory.mktemp("model_repository")
    build(tiny_settings(tiny_model_dir, conll_dir, artifacts, repository, epochs=3))
    return TinyBuild(artifacts, repository)
