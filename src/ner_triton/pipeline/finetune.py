"""Fine-tune a BERT-family encoder for token-level NER on any label set (first-sub-token labelling).

AdamW with weight decay (not on biases and LayerNorm), linear warm-up then decay, gradient
clipping, length-bucketed batches, entity F1 on the validation split after every epoch, early
stopping on it, and the best checkpoint kept.

The recipe is sized in optimizer steps, so it works at any data size: a run plans at least
``min_steps`` steps (epochs = max(``epochs``, ceil(min_steps / steps per epoch)), at most ``max_epochs``) and
warms up over ``warmup_ratio`` of them. On CoNLL-2003 (439 steps an epoch at batch 32) the defaults give the
same 4 epochs as before; on a set of 2,000 sentences they give 16 epochs instead of 4 (63 steps each). An
``EPOCHS`` the user set (without ``MIN_STEPS``) is the plan itself; the log says at once which one decided.

Early stopping (``patience`` epochs without a better validation F1) counts from the early-stopping floor:
``min_steps`` or half the planned steps, whichever is fewer - so on a small set, where the step floor *is*
the plan, a run whose validation F1 stopped improving still ends early. The summary says why it stopped.

Document context (``CONTEXT``, sub-tokens per side; off by default): where the data marks documents, each
training sentence is read between up to that many sub-tokens of its neighbouring sentences (FLERT), the loss
on its own tokens only; a share of them (``alone_share``, drawn afresh every epoch) is read alone so the model
still does well on single sentences. Validation then scores the document mode.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ner_triton.alignment import Encoding, encode_texts, pad_batch, subtoken_labels
from ner_triton.data import DataSource, Sentence, load_split
from ner_triton.labels import LabelMap
from ner_triton.modeling import NerModel, load_tokenizer, resolve_model
from ner_triton.pipeline.evaluate import encode_sentences, evaluate, torch_predictor
from ner_triton.pipeline.prune import prune_model
from ner_triton.schema import CASING_IDS, IGNORE_INDEX, LABELS_FILE
from ner_triton.settings import BuildSettings, TrainSettings

log = logging.getLogger(__name__)

TRAIN_SUMMARY = "train_summary.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def bucketed_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of similar length: shuffle, sort within chunks of 50 batches, shuffle the batches."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c : c + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def subsample(sentences: list[Sentence], n: int | None, seed: int) -> list[Sentence]:
    """A seeded random subset of ``n`` sentences (all when ``n`` is None or large enough)."""
    if n is None or n >= len(sentences):
        return sentences
    rng = random.Random(seed)
    return [sentences[i] for i in sorted(rng.sample(range(len(sentences)), n))]


def label_tensor(encodings: Sequence[Encoding], label_rows: Sequence[list[int]]) -> torch.Tensor:
    n = max(len(e) for e in encodings)
    out = torch.full((len(encodings), n), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(label_rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def planned_epochs(train_sentences: int, batch_size: int, epochs: int, min_steps: int, max_epochs: int) -> int:
    """Epochs to plan: at least ``epochs``, enough for ``min_steps`` optimizer steps, at most ``max_epochs``."""
    steps_per_epoch = max(1, -(-train_sentences // batch_size))
    return max(1, min(max(epochs, -(-min_steps // steps_per_epoch)), max(epochs, max_epochs)))


def plan_epochs(train_sentences: int, ts: TrainSettings) -> tuple[int, str]:
    """The epochs to run and why, in words for the log and the summary.

    An ``EPOCHS`` the user set (``ts.explicit``) wins over the step floor unless ``MIN_STEPS`` was set too;
    otherwise :func:`planned_epochs` decides."""
    steps_per_epoch = max(1, -(-train_sentences // ts.batch_size))
    floor = planned_epochs(train_sentences, ts.batch_size, ts.epochs, ts.min_steps, ts.max_epochs)
    if "epochs" in ts.explicit and "min_steps" not in ts.explicit:
        why = f"EPOCHS={ts.epochs} as set ({ts.epochs * steps_per_epoch} steps of {steps_per_epoch} an epoch)"
        if floor != ts.epochs:
            why += f"; the step floor (MIN_STEPS={ts.min_steps}: {floor} epochs) does not apply to a set EPOCHS"
        return ts.epochs, why
    if floor == ts.epochs:
        return floor, f"EPOCHS={ts.epochs} ({floor * steps_per_epoch} steps, at least MIN_STEPS={ts.min_steps})"
    cap = " (capped at MAX_EPOCHS)" if floor == max(ts.epochs, ts.max_epochs) else ""
    why = (f"{floor} epochs{cap}: the step floor MIN_STEPS={ts.min_steps} at {steps_per_epoch} steps an epoch "
           f"outweighs EPOCHS={ts.epochs}")  # fmt: skip
    if "epochs" in ts.explicit:
        why += " (MIN_STEPS was set too: set MIN_STEPS=0 for exactly EPOCHS)"
    return floor, why


def early_stop_floor(min_steps: int, planned_steps: int) -> int:
    """The step from which early stopping's patience counts: ``min_steps`` or half the plan, whichever is fewer
    (on a small set the step floor is the whole plan, and early stopping could never fire)."""
    return min(min_steps, planned_steps // 2)


def finetune(settings: BuildSettings, data: str | Path | DataSource, output_dir: Path) -> Path:
    """Fine-tune ``settings.model`` on ``data``; write the best model to ``output_dir``."""
    ts = settings.train
    seed_everything(ts.seed)
    torch.set_num_threads(settings.threads)
    model_name = resolve_model(settings.model)
    train, valid = _splits(settings, data)
    labels = LabelMap.from_sentences([*train, *valid])
    log.info("model %s, %d train / %d valid sentences, labels %s", model_name, len(train), len(valid), labels.labels)
    only_valid = sorted(
        set(LabelMap.from_sentences(valid).entity_types) - set(LabelMap.from_sentences(train).entity_types)
    )
    if only_valid:
        log.warning("entity types %s occur in the validation split but not in training: the model cannot learn "
                    "them; add training examples of them.", only_valid)  # fmt: skip
    tokenizer = load_tokenizer(model_name)
    model = NerModel.from_pretrained_encoder(model_name, labels, ts.use_casing)
    epochs, why = plan_epochs(len(train), ts)
    (log.warning if "does not apply" in why or "was set too" in why else log.info)("training plan: %s", why)
    summary = train_model(settings, model, tokenizer, labels, train, valid, epochs, min_steps=ts.min_steps)
    model.save(output_dir, tokenizer, labels)
    summary = {"model": model_name, **summary, "plan": why}
    (output_dir / TRAIN_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info("best epoch %d (valid F1 %.4f), saved to %s", summary["best_epoch"], summary["best_valid_f1"], output_dir)
    return output_dir


def _splits(settings: BuildSettings, data: str | Path | DataSource) -> tuple[list[Sentence], list[Sentence]]:
    ts = settings.train
    train = subsample(load_split(data, "train"), ts.max_train_sentences, ts.seed)
    valid = subsample(load_split(data, "valid"), settings.max_eval_sentences, ts.seed)
    return train, valid


def train_model(
    settings: BuildSettings,
    model: NerModel,
    tokenizer: Any,
    labels: LabelMap,
    train: Sequence[Sentence],
    valid: Sequence[Sentence],
    epochs: int,
    teacher: NerModel | None = None,
    distill: float = 0.0,
    temperature: float = 2.0,
    min_steps: int = 0,
) -> dict[str, Any]:
    """The training loop (shared by fine-tuning and pruning recovery); keeps the best epoch's weights.

    Runs ``epochs`` epochs, or fewer when validation F1 does not improve for ``patience`` epochs counted from
    the early-stopping floor (:func:`early_stop_floor` of ``min_steps``); the summary says how many steps ran
    and why it stopped.

    With a ``teacher`` the loss is ``(1 - distill) * CE + distill * T^2 * KL(teacher || student)`` on the
    softened logits of the labelled positions (knowledge distillation).
    """
    ts = settings.train
    alone = encode_texts(tokenizer, [s.text for s in train], ts.max_length)
    label_rows = [subtoken_labels(e, s.token_starts(), s.tags, labels) for e, s in zip(alone, train, strict=True)]
    # document context (FLERT): each sentence between its neighbours' sub-tokens, except a share read alone
    with_context = ts.context_tokens > 0 and any(s.in_document for s in train)
    in_context = encode_sentences(tokenizer, train, ts.max_length, ts.context_tokens) if with_context else alone
    context_rows = (
        [subtoken_labels(e, s.token_starts(), s.tags, labels) for e, s in zip(in_context, train, strict=True)]
        if with_context else label_rows
    )  # fmt: skip
    if ts.context_tokens and not with_context:
        log.info("CONTEXT=%d: the training data marks no documents, so every sentence is read alone",
                 ts.context_tokens)  # fmt: skip
    context_free_rng = random.Random(ts.seed + 1)

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "casing.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": ts.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=ts.learning_rate)
    rng = random.Random(ts.seed)
    steps_per_epoch = -(-len(train) // ts.batch_size)
    total = steps_per_epoch * epochs
    warmup = int(total * ts.warmup_ratio)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    if teacher is not None:
        teacher.eval()

    best_f1, best_epoch, best_state = -1.0, 0, None
    history = []
    bad_epochs = 0
    steps = 0
    stop_from = early_stop_floor(min_steps, total)
    stop_reason = f"planned epochs done ({epochs})"
    t_start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        if with_context:  # a fresh draw each epoch of the sentences read without their context
            pick = [context_free_rng.random() >= ts.alone_share for _ in train]
            encodings = [c if p else a for a, c, p in zip(alone, in_context, pick, strict=True)]
            rows = [c if p else a for a, c, p in zip(label_rows, context_rows, pick, strict=True)]
        else:
            encodings, rows = alone, label_rows
        lengths = [len(e) for e in encodings]
        batches = bucketed_batches(lengths, ts.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch")
        running = 0.0
        for k, idx in enumerate(bar, start=1):
            batch = {n: torch.from_numpy(v) for n, v in pad_batch([encodings[i] for i in idx]).items()}
            if not ts.use_casing:
                batch.pop(CASING_IDS)
            target = label_tensor([encodings[i] for i in idx], [rows[i] for i in idx])
            logits = model(**batch)
            flat, flat_target = logits.view(-1, logits.shape[-1]), target.view(-1)
            loss = loss_fn(flat, flat_target)
            if teacher is not None and distill > 0:
                with torch.no_grad():
                    soft = teacher(**batch).view(-1, logits.shape[-1])
                keep = flat_target != IGNORE_INDEX
                kl = torch.nn.functional.kl_div(
                    torch.log_softmax(flat[keep] / temperature, -1),
                    torch.log_softmax(soft[keep] / temperature, -1),
                    log_target=True,
                    reduction="batchmean",
                )
                loss = (1 - distill) * loss + distill * temperature**2 * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), ts.max_grad_norm)
            optimizer.step()
            scheduler.step()
            steps += 1
            running += loss.item()
            if k % 10 == 0:
                bar.set_postfix(loss=f"{running / k:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        result = evaluate(torch_predictor(model), valid, tokenizer, labels, settings.eval_batch_size, desc="valid",
                          context=ts.context_tokens if with_context else 0)  # fmt: skip
        history.append({"epoch": epoch, "train_loss": round(running / len(batches), 4), "valid_f1": result.f1})
        log.info("epoch %d: train loss %.4f, valid F1 %.4f", epoch, running / len(batches), result.f1)
        if result.f1 > best_f1:
            best_f1, best_epoch, bad_epochs = result.f1, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        elif steps >= stop_from:  # patience counts from the early-stopping floor
            bad_epochs += 1
            if bad_epochs >= ts.patience and epoch < epochs:
                stop_reason = (f"early stop: valid F1 did not improve for {bad_epochs} epochs (best: epoch "
                               f"{best_epoch}; patience counted from step {stop_from})")  # fmt: skip
                log.info("%s, after %d of %d planned steps", stop_reason, steps, total)
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    return {
        "train_sentences": len(train),
        "valid_sentences": len(valid),
        "epochs_run": len(history),
        "epochs_planned": epochs,
        "steps_run": steps,
        "stop_reason": stop_reason,
        "early_stop_from_step": stop_from,
        "best_epoch": best_epoch,
        "best_valid_f1": best_f1,
        "history": history,
        "train_seconds": round(time.perf_counter() - t_start, 1),
        "settings": {k: v for k, v in vars(ts).items()},
    }


def prune_and_recover(
    settings: BuildSettings, data: str | Path | DataSource, model_dir: Path, output_dir: Path
) -> Path:
    """Prune the fine-tuned model in ``model_dir`` (``settings.prune``), recover it with a short fine-tune
    distilled from the unpruned model, and write it to ``output_dir``; returns ``output_dir``."""
    ps, ts = settings.prune, settings.train
    seed_everything(ts.seed)
    torch.set_num_threads(settings.threads)
    tokenizer = load_tokenizer(str(model_dir))
    labels = LabelMap.load(model_dir / LABELS_FILE)
    train, valid = _splits(settings, data)
    teacher, student = NerModel.load(model_dir), NerModel.load(model_dir)
    encodings = encode_texts(tokenizer, [s.text for s in train], ts.max_length)
    rows = [subtoken_labels(e, s.token_starts(), s.tags, labels) for e, s in zip(encodings, train, strict=True)]
    batches = sample_batches(encodings, rows, ps.importance_batches, ts.batch_size, ts.seed, ts.use_casing)
    pruned = prune_model(student, batches, ps)
    summary = train_model(
        settings, student, tokenizer, labels, train, valid, ps.epochs, teacher, ps.distill, ps.temperature
    )
    student.save(output_dir, tokenizer, labels)
    previous = json.loads((model_dir / TRAIN_SUMMARY).read_text(encoding="utf-8"))
    summary = {**previous, "pruning": {**pruned, "recovery": summary}}
    (output_dir / TRAIN_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info("pruned model (valid F1 %.4f after recovery) saved to %s", summary["pruning"]["recovery"]["best_valid_f1"],
             output_dir)  # fmt: skip
    return output_dir


def sample_batches(
    encodings: Sequence[Any], label_rows: Sequence[list[int]], n: int, batch_size: int, seed: int, use_casing: bool
) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """``n`` random training batches as model inputs and label tensors (for importance scores)."""
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
