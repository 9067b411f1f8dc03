# The two commands of the README. Both build or refresh .venv first (a no-op when current).
SHELL := /bin/bash
VENV := $(CURDIR)/.venv

# Nothing may reach the network: no DVC analytics or update checks, no Prefect telemetry,
# and Prefect's home inside the project.
export PATH := $(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: repro test test-slow venv browser results-diff results-check

venv:
	@bash scripts/bootstrap.sh

# Chromium and chromedriver for the web page's browser test (apt-get as root; a no-op when there).
browser:
	@bash scripts/install_browser.sh

## Run the whole pipeline (dvc repro) on params.yaml's datasets; the embedded default is synthetic.
repro: venv
	lightfer params
	dvc repro

# Tests run in two processes (pytest-xdist): most use one thread each, so two of them fill
# the two cores this is sized for. The fast tier goes by module (module fixtures are built
# once); the slow tier by test, so the four preset dry runs split between the processes.
PYTEST := python -m pytest -n 2

## Lint, then the fast tier of the test suite (about a minute; what to run while working).
test: venv browser
	ruff check .
	ruff format --check .
	$(PYTEST) --dist loadfile -m "not slow"

## The slow tier: pipeline-level tests (DVC, Prefect, preset dry runs, kills and resumes).
test-slow: venv
	$(PYTEST) --dist load -m slow --durations=15

## After `make repro`: params and metrics now against the committed dvc.lock and reports.
results-diff: venv
	@echo "== dvc params diff HEAD (nothing listed: the params are the committed ones)"
	@dvc params diff HEAD
	@echo "== dvc metrics diff HEAD (nothing listed: every metric equals the committed one)"
	@dvc metrics diff --precision 4 HEAD
	@echo "== files changed against the commit"
	@git --no-pager diff --stat HEAD -- dvc.lock reports

## After `make repro`: data outputs byte-identical to HEAD's, metrics within HEAD's tolerances.
results-check: venv
	lightfer results check --against HEAD
