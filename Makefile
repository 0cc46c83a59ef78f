# rotation-rescue: build, test and demo entry points.
#
#   make venv   # once: Python tools (moto, cargo-lambda + zig, SAM CLI, cfn-lint) into .venv
#   make test   # fmt, clippy, cargo test against a local moto, template checks
#   make demo   # rescue a seeded failed rotation on a local moto, end to end
#
# Needs: cargo (rustfmt, clippy) and python3 (3.11) on PATH. Nothing here needs AWS
# credentials except `deploy`.

PYTHON       ?= python3
CARGO        ?= cargo
VENV         ?= .venv
TEMPLATE     ?= template.yaml
REQUIREMENTS ?= tools/requirements.txt
CONSTRAINTS  ?= tools/constraints.txt
PIP_VERSION  ?= 26.3
BINARY       ?= rotation-rescue-lambda

TEST_LOG     ?= target/test-output.txt

# bash, for PIPESTATUS: `cargo test | tee` must still fail when a test fails.
SHELL := bash

VENV_BIN := $(abspath $(VENV))/bin
STAMP    := $(VENV)/.installed

# .venv/bin first: `sam build` and `cargo lambda` find cargo-lambda there, and cargo-lambda
# finds zig as `python3 -m ziglang`, which only works with the venv's python3.
export PATH := $(VENV_BIN):$(PATH)
# The tests start their own moto and cargo-lambda from these paths.
export MOTO_SERVER  := $(VENV_BIN)/moto_server
export CARGO_LAMBDA := $(VENV_BIN)/cargo-lambda

# SAM CLI: no telemetry, and no weekly version check against PyPI. The check is skipped while
# the app dir's metadata.json holds a future lastVersionCheck; __SAM_CLI_APP_DIR points SAM at a
# project-local app dir (SAM CLI's own integration tests use the same variable).
export SAM_CLI_TELEMETRY := 0
export __SAM_CLI_APP_DIR := $(abspath $(VENV))/sam-app
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: all venv constraints test check-rust lint-template demo build deploy clean distclean

all: test

venv: $(STAMP)

# Reinstalls only when the requirements or constraints change.
$(STAMP): $(REQUIREMENTS) $(CONSTRAINTS)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet "pip==$(PIP_VERSION)"
	$(VENV)/bin/python -m pip install --quiet -r $(REQUIREMENTS) -c $(CONSTRAINTS)
	mkdir -p $(__SAM_CLI_APP_DIR)
	printf '{"lastVersionCheck": 4102444800.0, "telemetryEnabled": false}\n' \
		> $(__SAM_CLI_APP_DIR)/metadata.json
	$(VENV)/bin/cargo-lambda lambda system | grep -q 'python3 -m ziglang' \
		|| { echo 'cargo-lambda does not find zig from the ziglang wheel' >&2; exit 1; }
	touch $@

# Re-pins every transitive dependency after a change to $(REQUIREMENTS).
constraints: venv
	{ printf '# Full pip freeze of .venv for tools/requirements.txt (Python 3.11). Regenerate with\n'; \
	  printf '# `make constraints` after changing tools/requirements.txt.\n'; \
	  $(VENV)/bin/python -m pip freeze --all --exclude-editable \
	    --exclude pip --exclude setuptools; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# The template checks run first, so that cargo's test summary closes the output.
test: venv
	$(MAKE) --no-print-directory lint-template
	$(MAKE) --no-print-directory check-rust

check-rust: venv
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	mkdir -p $(dir $(TEST_LOG))
	$(CARGO) test 2>&1 | tee $(TEST_LOG); exit $${PIPESTATUS[0]}
	@awk '/^test result:/ { p += $$4; f += $$6; i += $$8 } \
		END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' $(TEST_LOG)

lint-template: venv
	sam validate --lint -t $(TEMPLATE)
	cfn-lint $(TEMPLATE)

demo: venv
	bash scripts/demo.sh

# The alarm fan-out benchmark: 1,000 secrets on its own local moto, one alarm at
# RESCUE_MAX_RATE=50; prints wall time, calls by operation, calls per rescued secret and the
# achieved mutating-call rate (figures only, no timing assertions). Not part of `test`.
.PHONY: bench
bench: venv
	$(CARGO) run --quiet --example alarm_fan_out

# arm64 cross build through cargo-lambda and zig. Needs the aarch64-unknown-linux-gnu Rust
# target (`rustup target add aarch64-unknown-linux-gnu`); not part of `test`.
build: venv
	sam build -t $(TEMPLATE)

deploy: build
	sam deploy --guided

clean:
	rm -rf .aws-sam
	$(CARGO) clean

distclean: clean
	rm -rf $(VENV)
