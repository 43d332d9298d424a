# ner-triton: fine-tune -> ONNX -> INT8 -> Triton. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# Build knobs, passed to the build through the environment (empty = default):
#   MODEL (local path or hub id; default: the offline all-MiniLM-L6-v2), DATA (a directory of train/valid/test
#   files in any column format, 'hub' or 'hub:<dataset>'), SCHEME (auto|iob1|iob2|bioes|bilou|io), HUB_TOKENS,
#   HUB_TAGS, HUB_SPLITS, EPOCHS, MIN_STEPS, MAX_EPOCHS, MAX_TRAIN_SENTENCES, MAX_EVAL_SENTENCES, CASING (1/0),
#   SEED, LR, BATCH_SIZE, CALIB_SENTENCES, SMOOTHQUANT, MAX_F1_DROP, SERVE, REQUIRE_INT8, REUSE_MODEL, MIN_F1, BASELINE_MARGIN,
#   PRUNE (e.g. layers=2,heads=0.25), CONTEXT (sub-tokens of document context per side, 0 = off), ARTIFACTS,
#   MODEL_REPOSITORY (docs/build.md)
export MODEL_REPOSITORY MODEL DATA SCHEME HUB_TOKENS HUB_TAGS HUB_SPLITS EPOCHS CONTEXT MIN_STEPS MAX_EPOCHS MAX_TRAIN_SENTENCES MAX_EVAL_SENTENCES CASING SEED LR BATCH_SIZE CALIB_SENTENCES SMOOTHQUANT MAX_F1_DROP SERVE REQUIRE_INT8 REUSE_MODEL MIN_F1 BASELINE_MARGIN PRUNE ARTIFACTS
# Quick build used by `make demo`: a subset of CoNLL-2003, a few minutes on 2 cores (exactly 2 epochs: no
# minimum step count).
DEMO_TRAIN_SENTENCES ?= 3000
DEMO_EPOCHS ?= 2
DEMO_MIN_STEPS ?= 0

.PHONY: help setup build demo repository serve eval-served worst-case tune-batching prune-sweep bench quality-overhead loadtest stop replicas replicas-measure capacity sweep engine gpu-check perf-inputs test test-fast lint format clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[serve,loadtest,plots,dev]'
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the project (CPU torch from local disk); quick when done
	@echo "environment ready: $(VENV)"

build: setup ## Fine-tune, export, quantize, evaluate, gate; writes artifacts/report.{json,md}, fills model_repository/
	$(VENV)/bin/ner-build

demo: setup ## The main job: quick build on a CoNLL-2003 subset, serve it on Triton, run the client, stop
	MAX_TRAIN_SENTENCES=$${MAX_TRAIN_SENTENCES:-$(DEMO_TRAIN_SENTENCES)} EPOCHS=$${EPOCHS:-$(DEMO_EPOCHS)} \
	  MIN_STEPS=$${MIN_STEPS:-$(DEMO_MIN_STEPS)} \
	  VENV=$(VENV) build/demo.sh

repository: setup ## Regenerate the committed config.pbtxt / model.py (re-export) files of model_repository/
	$(VENV)/bin/ner-repository

serve: setup ## Start tritonserver on model_repository/ (ports: TRITON_GRPC_PORT/HTTP/METRICS) and wait until ready
	$(VENV)/bin/ner-serve start

eval-served: setup ## Entity F1 of CoNLL-2003 test through the running server (16 clients), vs the build report; MODE=document sends documents
	$(VENV)/bin/ner-eval-served --url 127.0.0.1:$${TRITON_GRPC_PORT:-8001} --mode $${MODE:-sentence} \
	  --report $${ARTIFACTS:-artifacts}/report.json --output $${ARTIFACTS:-artifacts}/served_eval$${MODE:+_$${MODE}}.json

tune-batching: setup ## Compare dynamic-batching settings of the BERT step on a real server (needs a build)
	$(VENV)/bin/ner-tune-batching --artifacts $${ARTIFACTS:-artifacts} \
	  --output $${ARTIFACTS:-artifacts}/batching.json

prune-sweep: setup ## Pruning levels of the built model vs unpruned, INT8: artifacts/prune/report.{json,md}, plot
	$(VENV)/bin/ner-prune-sweep

worst-case: setup ## The worst requests the budgets allow vs single sentences, on the running server -> artifacts/worst_case.json
	$(VENV)/bin/ner-worst-case --url 127.0.0.1:$${TRITON_GRPC_PORT:-8001} --output $${ARTIFACTS:-artifacts}/worst_case.json

bench: setup ## Peers side by side (HF pipeline, ORT in-process, Triton gRPC) -> benchmarks/results/
	$(VENV)/bin/ner-bench --artifacts $${ARTIFACTS:-artifacts}

quality-overhead: setup ## Throughput of ner with its quality metrics on vs off (two servers, alternating) -> benchmarks/quality/
	$(VENV)/bin/ner-quality-overhead --repository $${MODEL_REPOSITORY:-model_repository}

loadtest: setup ## Locust scenario (NER_SCENARIO=steady|ramp|spike) on a running server; SLO breach = exit 1
	NER_SCENARIO=$${NER_SCENARIO:-steady} $(VENV)/bin/locust -f loadtest/locustfile.py --headless --processes -1 \
	  --host 127.0.0.1:$${TRITON_GRPC_PORT:-8001} \
	  --triton-metrics-url http://127.0.0.1:$${TRITON_METRICS_PORT:-8002}/metrics \
	  --csv loadtest/results/$${NER_SCENARIO:-steady} --html loadtest/results/$${NER_SCENARIO:-steady}.html \
	  --report-prefix loadtest/results/$${NER_SCENARIO:-steady}

replicas: setup ## N=2 local tritonservers behind nginx (gRPC :8001, HTTP :8000); Ctrl-C stops them all
	$(VENV)/bin/ner-replicas run --replicas $${N:-2} --repository $${MODEL_REPOSITORY:-model_repository}

replicas-measure: setup ## Throughput and p99 through the proxy for 1 and 2 replicas -> benchmarks/replicas/
	$(VENV)/bin/ner-replicas measure --replicas $${N:-1,2} --repository $${MODEL_REPOSITORY:-model_repository}

capacity: setup ## Replicas needed for RATE sent/s under a p99 SLO (SLO_P99_MS), from the bench curve
	$(VENV)/bin/ner-capacity --rate $${RATE:-1000} --slo-p99-ms $${SLO_P99_MS:-100}

sweep: setup ## Instances x ONNX Runtime threads of `ner` on this host -> benchmarks/sweep/ (NER_INSTANCES=auto uses it)
	$(VENV)/bin/ner-sweep --artifacts $${ARTIFACTS:-artifacts} $${CONFIGS:+--configs $$CONFIGS}

engine: setup ## GPU host: TensorRT INT8 engine + GPU model repository (model_repository_gpu/) from artifacts/
	$(VENV)/bin/python -m pip install -q -e '.[gpu]'
	$(VENV)/bin/ner-engine --artifacts $${ARTIFACTS:-artifacts} --repository $${GPU_REPOSITORY:-model_repository_gpu}

gpu-check: setup ## GPU host: engines' F1, INT8 vs FP16 throughput per bucket (scripts/gpu_check.sh)
	PY=$(PY) scripts/gpu_check.sh

perf-inputs: setup ## perf_analyzer input data + Model Analyzer config of the ensemble -> perf/ (docs/deploy-gpu-host.md)
	$(VENV)/bin/ner-perf-inputs --output $${PERF_DIR:-perf}

stop: ## Stop the server started by `make serve`
	@if [ -x $(VENV)/bin/ner-serve ]; then $(VENV)/bin/ner-serve stop; fi

test: setup ## Run the whole test suite
	$(PY) -m pytest

test-fast: setup ## Run the tests without the slow end-to-end ones
	$(PY) -m pytest -m "not slow"

lint: setup ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check src tests build client loadtest
	$(VENV)/bin/ruff format --check src tests build client loadtest
	$(VENV)/bin/mypy

format: setup ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests build client loadtest
	$(VENV)/bin/ruff format src tests build client loadtest

clean: ## Remove build outputs (keeps .venv)
	rm -rf artifacts .triton .pytest_cache .mypy_cache .ruff_cache
