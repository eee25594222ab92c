# jukinet — two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
JUKI   := $(VENV)/bin/juki
STAMP  := $(VENV)/.installed
PROTOS := $(wildcard proto/juki/v1/*.proto)

.PHONY: run test lint typecheck pytest proto proto-check install clean bench bench-deps bench-lookup soak

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

## Start the whole system on embedded defaults (dev PKI, keys, seeded LMDB) in the foreground.
run: $(STAMP)
	$(JUKI) run

## Lint, type-check, check generated code is current, then the tests.
test: $(STAMP) proto-check lint typecheck pytest

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

## The lookup benchmark of SPEC §8: 2 million residents (cached in var/bench-cache), every scenario next to
## the empty RPC at 1/8/32/128 in flight, 2 server processes, PostgreSQL and Redis peers. Writes
## bench/results/lookup-2M.{json,md,png}. About 20 minutes on 2 cores (first run: + building the dataset).
bench: $(STAMP) bench-deps
	$(JUKI) bench run

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

clean:
	rm -rf var certs/dev
