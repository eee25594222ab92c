# jukinet — two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
JUKI   := $(VENV)/bin/juki
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/juki/v1/*.proto)

.PHONY: run test lint typecheck pytest proto proto-check install clean distclean python-check fonts bench bench-deps bench-lookup settings-doc settings-check soak bench-quick bench-profile bench-batch

## Python >= 3.11 first (before any venv is made): the one that makes the venv, and a venv already there.
python-check:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "jukinet needs Python >= 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1 | head -1)."; \
	  echo "Install one (Debian: apt-get install python3) or name it: make PYTHON=python3.12 run"; exit 1; }
	@if test -x $(PY) && ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
	  echo "$(VENV) was made with $$($(PY) --version 2>&1 | head -1), jukinet needs >= 3.11: make distclean, then make run"; \
	  exit 1; fi

$(STAMP): pyproject.toml | python-check
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

## Start the whole system on embedded defaults (dev PKI, keys, seeded LMDB) in the foreground.
run: $(STAMP) fonts
	$(JUKI) run

## Lint, type-check, check generated code is current, then the tests.
test: $(STAMP) fonts proto-check settings-check lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy server clients bench tests

pytest: $(STAMP)
	$(VENV)/bin/pytest -q

## Regenerate Python stubs from proto/ (the only way they change).
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -I proto --python_out=proto --pyi_out=proto --grpc_python_out=proto $(PROTOS)

## Fail when the committed stubs differ from what the .proto files generate.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -I proto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	for f in $$(cd $$tmp && find . -name '*.py*' -type f); do \
	  cmp -s $$tmp/$$f proto/$$f || { echo "stale generated code: proto/$$f (run make proto)"; rm -rf $$tmp; exit 1; }; \
	done; \
	for f in $$(cd proto && find . -name '*_pb2*.py*' -type f); do \
	  test -f $$tmp/$$f || { echo "generated file without a .proto: proto/$$f"; rm -rf $$tmp; exit 1; }; \
	done; \
	rm -rf $$tmp; echo "generated code is current"

## Regenerate docs/settings.md (the settings table) from server/settings.py.
settings-doc: $(STAMP)
	$(PY) -m clients.settings_doc

## Fail when docs/settings.md is not what server/settings.py generates.
settings-check: $(STAMP)
	@$(PY) -m clients.settings_doc --check

## The lookup benchmark of SPEC §8: 2 million residents (cached in var/bench-cache), every scenario next to
## the empty RPC at 1/8/32/128 in flight, 2 server processes, PostgreSQL and Redis peers. Writes
## bench/results/lookup-2M.{json,md,png}. About 25 minutes on 2 cores (first run: + building the dataset).
bench: $(STAMP) bench-deps
	$(JUKI) bench run

## A Japanese font (Debian's IPAex Gothic) for the disclosure PDF, when none is installed (skipped, with a
## message, when it cannot be had: `juki operator disclose` then writes the HTML only, its PDF test skips).
fonts:
	@if [ -z "$$(fc-list :lang=ja 2>/dev/null)" ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fontconfig fonts-ipaexfont-gothic) >/dev/null 2>&1 \
	    || echo "no Japanese font installed: the disclosure PDF will not be written (apt-get install fonts-ipaexfont-gothic)"; \
	fi

## The regression gate's run (a few minutes): 200k residents (cached), 1 and 32 in flight, the empty RPC,
## Lookup, Search and BatchProvide; the same JSON/Markdown/PNG as `make bench`, in bench/results/quick-200k.*.
## Compare two runs with `$(PY) -m bench.compare OLD.json NEW.json` (exit 1: a ratio regressed).
bench-quick: $(STAMP)
	$(JUKI) bench run --residents 200000 --in-flight 1,32 --duration 2 --rounds 2 --workers 1 --no-peers \
	  --scenario lookup_random --scenario search --scenario search_address --scenario batch_provide \
	  --name quick-200k

## Where a Lookup's time goes beyond the empty RPC's: py-spy samples the prefectural server under each (200k
## residents, 32 in flight), µs per call by function → bench/results/profile-200000.{md,json}. About 1 minute.
bench-profile: $(STAMP)
	$(PY) -m bench.profile

## One chunked BatchProvide of 10k, 100k and 1M 住民票コード on the cached 2M dataset (read only: copied to a
## temporary home), beside unary Lookup QPS of the same run, with the server's peak RSS per size. Writes
## bench/results/batch-2M.{json,md}. A few minutes on 2 cores (first run: + building the dataset, as `make bench`).
bench-batch: $(STAMP)
	$(PY) -m bench.batch_sizes

## Debian's PostgreSQL and Redis for the benchmark's peers (skipped, with a message, when they cannot be had).
bench-deps:
	@if ! command -v redis-server >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null) \
	    || echo "PostgreSQL/Redis not installed: the benchmark will skip its peers"; \
	fi

## A first Lookup latency next to an empty RPC (one process, sequential and 32 in flight).
bench-lookup: $(STAMP)
	$(JUKI) bench lookup

## A bounded mixed workload from several client processes on loopback for DURATION (default 10m): errors by
## code (an unexpected one fails), p50/p99 per minute, servers' VmRSS and fds every 30 s, audit bytes per
## call, `juki audit verify` at the end. Writes var/soak/report.json.
DURATION ?= 10m
soak: $(STAMP)
	$(PY) -m bench.soak --duration $(DURATION) --out var/soak/report.json

## The state `make run` made (stores, keys, logs, audit trails, dev PKI); the venv stays.
clean:
	rm -rf var certs/dev

## clean, and the venv too (after a Python upgrade, or a venv made with the wrong Python).
distclean: clean
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
