# Notify — the Makefile is the index of what a developer can do.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export PATH := $(HOME)/.local/bin:$(PATH)
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: help install dev test test-unit test-e2e test-reliability lint format schemas bench clean tools chart deploy-sync test-deploy

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-17s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --user --quiet uv || python3 -m pip install --quiet uv

install: $(UV) ## install every package of the workspace (uv, one lock file)
	$(UV) sync --frozen -p python3.11 || $(UV) sync -p python3.11

dev: install ## run the whole system on the embedded defaults (Ctrl-C stops it)
	.venv/bin/notify-dev

test: install tools ## the whole suite, as CI runs it (minutes-long fault cases: test-reliability)
	.venv/bin/pytest -m "not long" --durations=25 $(PYTEST_ARGS)

test-unit: install ## tests that need no broker or database
	.venv/bin/pytest -m "not integration and not e2e" $(PYTEST_ARGS)

test-e2e: install ## every service as a process, driven from outside
	.venv/bin/pytest tests/e2e $(PYTEST_ARGS)

test-reliability: install tools ## faults, bad input and abuse; report in test-output/reliability/
	.venv/bin/pytest -m reliability $(PYTEST_ARGS)

lint: install ## ruff (lint + format check) and mypy
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy schemas/src libs/common/src services/*/src

format: install ## apply ruff's fixes and formatting
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

schemas: install ## regenerate the JSON Schemas from the pydantic models
	$(PY) -m notify_schemas.generate

bench: install ## print throughput figures (see docs/benchmarks.md)
	$(PY) -m bench.run

clean: ## remove local state (embedded database, logs, caches)
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache test-output

# System tools the suite drives, from Debian's packages: promtool (package prometheus) for
# the alert-rule checks, chromium and a font for the browser tests (never a downloaded
# browser).
# Installed only when missing; without root/sudo or apt-get it says so and carries on, and
# the tests that need them are skipped with that reason.
TOOLS := promtool:prometheus chromium:chromium+fonts-liberation
tools: ## install promtool and chromium (Debian packages) if they are missing
	@missing=""; for t in $(TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $$(echo $${t##*:} | tr + ' ')"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	sudo=""; \
	if [ "$$(id -u)" != 0 ]; then \
	  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	  else echo "tools: missing$$missing and installing needs root; their tests will be skipped" >&2; exit 0; fi; \
	fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "tools: missing$$missing and apt-get is unavailable; their tests will be skipped" >&2; exit 0; \
	fi; \
	echo "tools: installing$$missing (apt-get)"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
	  && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	  || echo "tools: installing$$missing failed; their tests will be skipped" >&2

chart: install ## render the Helm chart (default and production values) into render/ for review
	$(PY) deploy/k8s/render.py --out render/default
	$(PY) deploy/k8s/render.py -f deploy/k8s/values-production.yaml --out render/production

deploy-sync: ## copy the alert rules and dashboards into the Helm chart (tests fail until they match)
	cp deploy/prometheus/alerts.yml deploy/k8s/notify/files/alerts.yml
	rm -f deploy/k8s/notify/files/dashboards/*.json
	cp deploy/grafana/dashboards/*.json deploy/k8s/notify/files/dashboards/

test-deploy: install tools ## checks of the Dockerfile, compose file, Helm chart, alerts and dashboards
	.venv/bin/pytest tests/deploy $(PYTEST_ARGS)
