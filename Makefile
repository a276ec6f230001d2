# The two commands a newcomer needs: `make run` and `make test`. Both set up the environment
# from the lock file first, on a machine with only Python 3.11+ and make.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/celgate.yaml
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test redis lint typecheck unit proto bench eval-inspect clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --python $(PYTHON)
	touch $@

run: $(VENV)/.synced
	$(BIN)/celgate serve --config $(CONFIG)

# Everything: lint, types, unit and integration tests.
test: $(VENV)/.synced redis lint typecheck
	$(BIN)/pytest -q

# The budget and rate-limit tests start real redis-server processes (Debian's package).
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	  else \
	    echo "the tests need redis-server on PATH: sudo apt-get install redis-server" >&2; exit 1; \
	  fi; }

lint: $(VENV)/.synced
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.synced
	$(BIN)/mypy

# The unit tests only (no servers on loopback): the quick loop while developing.
unit: $(VENV)/.synced
	$(BIN)/pytest -q -m "not integration"

proto: $(VENV)/.synced
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. \
		proto/gateway/v1/policy.proto proto/gateway/v1/gateway.proto
	$(BIN)/python clients/python/generate.py

bench: $(VENV)/.synced
	for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

eval-inspect: $(VENV)/.synced
	$(BIN)/python bench/eval_inspect.py

clean:
	rm -rf $(TOOLS) $(VENV)
