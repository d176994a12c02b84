# kordiam-bridge. `make demo` and `make test` work on a fresh machine: they create the virtualenv themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_FLAGS ?= -q

.PHONY: help venv demo demo-webhooks test lint typecheck unit integration test-localstack localstack localstack-stop \
        wordpress wordpress-stop activemq activemq-stop simulator run clean image image-test up down infra-test \
        checkov bench

help:
	@echo "make demo             run the whole bridge on embedded defaults (SQS, Kordiam simulator, folder channels)"
	@echo "make demo-webhooks    the same, with Kordiam calling the webhook ingress instead of the queue"
	@echo "make test             lint, type-check, all tests (moto, ActiveMQ, WordPress), LocalStack, then image-test"
	@echo "make venv             create .venv and install the bridge with its dev tools (other targets do it too)"
	@echo "make lint             ruff check, ruff format --check and the import layering (lint-imports)"
	@echo "make typecheck        mypy --strict over bridge, bench and tests"
	@echo "make unit             the unit tests"
	@echo "make integration      the integration tests (starts the real WordPress first)"
	@echo "make test-localstack  the end-to-end tests against LocalStack (its own port and folder)"
	@echo "make localstack       start LocalStack in host mode (no Docker) on 127.0.0.1:4566"
	@echo "make localstack-stop  stop it"
	@echo "make wordpress        install (Debian packages) and serve a real WordPress on 127.0.0.1:8089"
	@echo "make wordpress-stop   stop it"
	@echo "make activemq         install (Debian packages) and run ActiveMQ Classic, STOMP on 127.0.0.1:61613"
	@echo "make activemq-stop    stop it"
	@echo "make simulator        serve the Kordiam API simulator on 127.0.0.1:8700"
	@echo "make run CONFIG=...   run the worker with a config file (or with \$$BRIDGE_CONFIG)"
	@echo "make image-test       build the container image and run it, and the compose stack, on a Docker engine"
	@echo "make image / up / down  container image; worker + simulator + SQS emulator with docker compose"
	@echo "make infra-test       the container, compose and Terraform tests"
	@echo "make checkov          Checkov over infra/terraform"
	@echo "make bench            throughput, latency, CPU and memory vs the simplest loop, the ingress, a backlog (LocalStack; ActiveMQ)"
	@echo "make clean            stop the services running from .cache, then remove .venv, caches and demo-output"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

# The demo's SQS endpoint (moto) is the `demo` extra; the dev install has it already, a production one does not.
demo: venv
	$(BIN)/python -c 'import moto.server' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[demo]'
	$(BIN)/kordiam-bridge demo

# The same newsroom day with Kordiam's Global Export webhooks: simulator → ingress → queue → worker → channels.
demo-webhooks: venv
	$(BIN)/python -c 'import moto.server' 2>/dev/null || $(BIN)/python -m pip install -q -e '.[demo]'
	$(BIN)/kordiam-bridge demo --webhooks

# lint-imports: the layering contracts in pyproject.toml (README, Layout); no import runs up a layer.
lint: venv
	$(BIN)/ruff check bridge tests bench scripts
	$(BIN)/ruff format --check bridge tests bench scripts
	$(BIN)/lint-imports --no-cache

# The tests too: a fake that no longer matches the Protocol it stands in for, or a call without an argument that
# became required, fails here in seconds rather than in the integration run.
typecheck: venv
	$(BIN)/mypy --strict bridge bench tests

unit: venv
	$(BIN)/pytest $(PYTEST_FLAGS) tests/unit

integration: venv
	scripts/wordpress.sh start
	$(TEST_ACTIVEMQ) scripts/activemq.sh start
	$(WORDPRESS_ENV) $(ACTIVEMQ_ENV) $(BIN)/pytest $(PYTEST_FLAGS) tests/integration

# The same end-to-end tests against LocalStack (host mode, no Docker), on a port and in a folder of their own so
# they never stop a LocalStack that is running for something else (`make localstack`, `make bench`).
TEST_LOCALSTACK := LOCALSTACK_PORT=4599 LOCALSTACK_HOME=$(CURDIR)/.cache/localstack-tests

test-localstack: venv
	$(TEST_LOCALSTACK) scripts/localstack.sh start
	. scripts/interruptible.sh; \
	  interruptible env BRIDGE_TEST_SQS=localstack LOCALSTACK_ENDPOINT=http://127.0.0.1:4599 $(BIN)/pytest $(PYTEST_FLAGS) -m localstack tests; \
	  status=$$?; $(TEST_LOCALSTACK) scripts/localstack.sh stop; [ -z "$$interrupted" ] || status=130; exit $$status

WORDPRESS_ENV := BRIDGE_TEST_WORDPRESS=$(CURDIR)/.cache/wordpress/credentials.json
# The tests' broker has a port and a folder of its own, so it never stops one running for `make activemq`; the
# broker-restart tests restart it through scripts/activemq.sh with the same two variables.
TEST_ACTIVEMQ := ACTIVEMQ_PORT=61623 ACTIVEMQ_HOME=$(CURDIR)/.cache/activemq-tests
ACTIVEMQ_ENV := $(TEST_ACTIVEMQ) BRIDGE_TEST_ACTIVEMQ=stomp://127.0.0.1:61623

# LocalStack's first start installs it (about 90 s) and boots it (about 90 s), and the container images take 3 to 6
# minutes to build: both run in the background while the main pass runs (logs: .cache/localstack-tests-start.log,
# .cache/image-prepare.log), and `test-localstack` and `image-test` wait for them (the scripts' locks). A main pass
# that fails stops both again (`discard` stops a prepare still running); a LocalStack pass that fails discards the
# prepare (`image-test` would have stopped its engine).
# Interrupted (Ctrl-C, SIGTERM to make's process group or to make's pid alone), the passes' shells stop them too:
# neither gets the signal (the prepare has a process group of its own; a shell's background job ignores SIGINT), and
# make waits for the shell before it exits. Each step runs through scripts/interruptible.sh, which passes the
# shell's signal on to it: make signals its recipe's shell alone when it gets SIGTERM alone, and a shell's trap runs
# only once its foreground command has ended, so the pass would otherwise run to its end first. The services'
# starts share the main pass's shell, so that one interrupted (or failing) stops those already up, and the rest.
# The main pass (scripts/main-pass.sh) runs the unit tests alongside the service tests, the fault suite last.
STOP_BACKGROUND := $(TEST_LOCALSTACK) scripts/localstack.sh stop; scripts/docker.sh discard

test: lint typecheck venv
	@# The log exists before the background start opens it: the `cat` below must not race that start's redirect
	@# (a main pass that ends at once, `PYTEST_FLAGS=-k …`, reached the `cat` first on a busy machine).
	@mkdir -p .cache && : >.cache/localstack-tests-start.log
	. scripts/interruptible.sh; \
	  interruptible scripts/wordpress.sh start && interruptible env $(TEST_ACTIVEMQ) scripts/activemq.sh start && { \
	    ($(TEST_LOCALSTACK) scripts/localstack.sh start >>.cache/localstack-tests-start.log 2>&1 </dev/null &); \
	    echo "localstack: starting in the background for the LocalStack pass (log .cache/localstack-tests-start.log)"; \
	    interruptible scripts/docker.sh prepare-background; } && \
	  interruptible env $(WORDPRESS_ENV) $(ACTIVEMQ_ENV) scripts/main-pass.sh $(BIN)/pytest $(PYTEST_FLAGS); status=$$?; \
	  scripts/wordpress.sh stop; $(TEST_ACTIVEMQ) scripts/activemq.sh stop; \
	  [ -z "$$interrupted" ] || status=130; \
	  if [ $$status -ne 0 ]; then $(STOP_BACKGROUND); fi; \
	  exit $$status
	@cat .cache/localstack-tests-start.log
	. scripts/interruptible.sh; interruptible $(MAKE) test-localstack; status=$$?; \
	  if [ -n "$$interrupted" ]; then $(STOP_BACKGROUND); exit 130; fi; \
	  [ $$status -eq 0 ] || { scripts/docker.sh discard; exit 1; }
	. scripts/interruptible.sh; interruptible $(MAKE) image-test; status=$$?; \
	  if [ -n "$$interrupted" ]; then scripts/docker.sh discard; exit 130; fi; \
	  exit $$status

localstack:
	scripts/localstack.sh start

localstack-stop:
	scripts/localstack.sh stop

wordpress:
	scripts/wordpress.sh start

wordpress-stop:
	scripts/wordpress.sh stop

activemq:
	scripts/activemq.sh start

activemq-stop:
	scripts/activemq.sh stop

simulator: venv
	$(BIN)/kordiam-bridge simulator --port 8700

# Without CONFIG the worker takes $BRIDGE_CONFIG, or says in one line that it needs one of the two.
run: venv
	$(BIN)/kordiam-bridge run$(if $(CONFIG), --config '$(CONFIG)')

# Throughput, latency, CPU and memory against the simplest possible loop (not part of `make test`) and the webhook
# ingress's answer times (bench/ingress.py), then the backlog workload (a preloaded queue, many notifications per
# element: element GETs per element, drain time).
BENCH_ARGS ?=

# Then the same workload on ActiveMQ at C=32 against the simplest STOMP loop (its own broker, port and folder), and
# the backlog workload there too.
BENCH_ACTIVEMQ := ACTIVEMQ_PORT=61633 ACTIVEMQ_HOME=$(CURDIR)/.cache/activemq-bench

bench: venv
	$(BIN)/python -m pip install -q -e '.[bench]'
	LOCALSTACK_GATEWAY_SERVER=twisted scripts/localstack.sh start
	$(BIN)/python -m bench.run $(BENCH_ARGS) && $(BIN)/python -m bench.run --workload backlog; \
	  status=$$?; scripts/localstack.sh stop; exit $$status
	$(BENCH_ACTIVEMQ) scripts/activemq.sh start
	$(BIN)/python -m bench.run --queue activemq --broker stomp://127.0.0.1:61633 --concurrency 32 && \
	  $(BIN)/python -m bench.run --workload backlog --queue activemq --broker stomp://127.0.0.1:61633; \
	  status=$$?; $(BENCH_ACTIVEMQ) scripts/activemq.sh stop; exit $$status

# Container and local stack. `make image-test` (part of `make test`) starts a Docker engine if none answers
# (root: Debian's docker.io) and stops it afterwards, makes the base image when no registry answers
# (scripts/docker.sh), builds both images and runs tests/image. `image`, `up` and `down` need a running engine.
EMULATOR ?= moto
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo docker compose || echo docker-compose)

image-test: venv
	PYTEST_FLAGS='$(PYTEST_FLAGS)' scripts/docker.sh test

image:
	scripts/docker.sh build

up: image
	$(COMPOSE) --profile $(EMULATOR) up --detach

# Both profiles, whichever EMULATOR `make up` had: Compose v2's `down` leaves the containers of a profile it is not
# given running (and the network with them).
down:
	$(COMPOSE) --profile moto --profile localstack down

infra-test: venv
	$(BIN)/pytest $(PYTEST_FLAGS) tests/infra

checkov:
	scripts/checkov.sh run infra/terraform

# .cache holds the state dirs of the services the scripts run (the tests', the bench's, `make activemq`'s, ...): stop
# each one first, or its processes would outlive their pid files and keep their ports. A stop that fails keeps it all.
clean:
	@for home in .cache/wordpress*/; do [ ! -d "$$home" ] || WP_HOME="$(CURDIR)/$$home" scripts/wordpress.sh stop || exit; done
	@for home in .cache/activemq*/; do [ ! -d "$$home" ] || ACTIVEMQ_HOME="$(CURDIR)/$$home" scripts/activemq.sh stop || exit; done
	@for home in .cache/localstack*/; do [ ! -d "$$home" ] || LOCALSTACK_HOME="$(CURDIR)/$$home" scripts/localstack.sh stop || exit; done
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache demo-output
