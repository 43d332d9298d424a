#!/usr/bin/env bash
# `make demo`: quick build on a CoNLL-2003 subset -> serve on Triton -> client on sample sentences -> stop.
set -euo pipefail
VENV=${VENV:-.venv}
export MAX_TRAIN_SENTENCES=${MAX_TRAIN_SENTENCES:-3000} EPOCHS=${EPOCHS:-2} MIN_STEPS=${MIN_STEPS:-0} ARTIFACTS=${ARTIFACTS:-artifacts/demo}
# A model trained for two minutes loses more to INT8 than the full build (measured: static -2.5 F1 points,
# dynamic -0.28), so the demo's gate on the served variant allows 1 point; `make build` keeps 0.5.
export MAX_F1_DROP=${MAX_F1_DROP:-1}
start=$(date +%s)
"$VENV/bin/ner-build"
"$VENV/bin/ner-serve" start
trap '"$VENV/bin/ner-serve" stop' EXIT
"$VENV/bin/ner-client" \
  "Angela Merkel met Emmanuel Macron in Paris on Tuesday." \
  "The European Commission said on Friday that Danish farmers may sell more cheese to Japan." \
  "Apple opened a new office in Berlin, said Tim Cook, speaking to Reuters."
echo "demo finished in $(( $(date +%s) - start )) s (report: $ARTIFACTS/report.md)"
