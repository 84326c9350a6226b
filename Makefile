# Every target bootstraps .venv itself, so a fresh clone needs only Python 3.11 and make.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Project-local state; nothing leaves the machine (STACK.md: telemetry).
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
# The MLflow UI otherwise starts 7 background job workers (about 270 MB each) that browsing never uses.
# (Its web server likewise starts 4 processes by default; `--workers 1` serves one person browsing.)
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := 0
export YOLO_CONFIG_DIR := $(CURDIR)/.yolo_config

HOST ?= 127.0.0.1

.PHONY: help venv chromium postgresql dagster-home demo real stack stack-stop test lint format ui mlflow serve bench clean

help:
	@echo "make demo    set up, materialize everything on the embedded default, start the UIs and the app"
	@echo "make test    set up and run the test suite"
	@echo "make real    the same on real photos: pretrained weights (WEIGHTS=dir), labelled photos (PHOTOS=dir)"
	@echo "make stack  the server deployment on this machine (PostgreSQL, MLflow server, Dagster webserver + daemon)"
	@echo "make lint | format | ui | mlflow | serve | bench | clean"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,k8s]'
	touch $(STAMP)

# Browser for scrapy-playwright and the page tests: Debian's chromium here (playwright's own download
# needs network we do not have); elsewhere playwright's bundled build.
chromium:
	@if [ -x /usr/bin/chromium ] || [ -n "$$FASHION_CHROMIUM_PATH" ]; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; \
	else $(BIN)/playwright install chromium; fi

# PostgreSQL for `make stack` and its tests: Debian's package, used as binaries only (a cluster of our own under
# .stack/ or a temporary folder; the system service is never started).
postgresql:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "$$FASHION_PG_BIN" ]; then :; \
	elif command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql; \
	else echo "install PostgreSQL (initdb, pg_ctl) and set FASHION_PG_BIN to its bin folder" >&2; exit 1; fi

# The server deployment on loopback (README: Scale-out); the embedded default (make demo) is unaffected.
stack: venv chromium postgresql
	$(BIN)/fashion-pipeline stack up --host $(HOST)

stack-stop: venv
	$(BIN)/fashion-pipeline stack down

dagster-home:
	@mkdir -p $(DAGSTER_HOME) mlruns
	@test -f $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\nnux:\n  enabled: false\n' > $(DAGSTER_HOME)/dagster.yaml

demo: venv chromium dagster-home
	$(BIN)/fashion-pipeline demo --host $(HOST)

# The real profile: pretrained weights and labelled real photos (README: Real photos). The defaults point
# at this repository's ../shared folder; name your own with WEIGHTS=... PHOTOS=...
WEIGHTS ?= $(abspath ../shared/weights)
PHOTOS ?= $(abspath ../shared/data/real)
real: venv chromium dagster-home
	FASHION_WEIGHTS_DIR=$(WEIGHTS) FASHION_REAL_PHOTOS=$(PHOTOS) \
		$(BIN)/fashion-pipeline demo --profile real --host $(HOST)

test: venv chromium postgresql
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

ui: venv dagster-home
	$(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p 3000

mlflow: venv dagster-home
	@$(BIN)/python -c 'from fashion_pipeline.commands.demo import mlflow_landing_url as url; \
		print("Training runs and their metrics:", url("http://$(HOST):5000", "sqlite:///$(CURDIR)/mlruns/mlflow.db"))'
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
		--default-artifact-root $(CURDIR)/mlruns/artifacts --host $(HOST) --port 5000 --workers 1

serve: venv
	$(BIN)/fashion-pipeline serve --host $(HOST) --port 8000

# Each benchmark prints its figures against a baseline run in the same script (README: Benchmarks).
bench: venv chromium
	$(BIN)/python benchmarks/bench_merge.py
	$(BIN)/python benchmarks/bench_crawl.py --products 2000
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_knn.py --n 1000000
	$(BIN)/python benchmarks/bench_query.py
	$(BIN)/python benchmarks/bench_query.py --profile full

clean:
	rm -rf data/deepfashion2_sample data/deepfashion2 data/crops data/yolo data/models data/demo_shop \
		data/catalog data/embeddings data/index data/evaluation
