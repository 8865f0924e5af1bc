# Kafscale: `make run` starts one broker, `make test` runs every test.
CARGO_TARGET_DIR ?= target
export CARGO_TARGET_DIR
BROKER := $(CARGO_TARGET_DIR)/release/kafscale-broker
PY := .venv/bin/python

.PHONY: help build build-deps run demo test test-unit test-e2e test-helm crds tools lint fmt bench bench-peers bench-local-io profile-produce bench-tls bench-cluster fuzz clean-data image

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build-deps: ## Install what the build needs beyond Rust (protoc for the etcd-client crate)
	./scripts/install-build-deps.sh

build: build-deps ## Build the release broker and kafscale-bench (one cargo run: shared dependencies build once)
	cargo build --release -p kafscale-broker -p kafscale-bench

run: build ## Start one broker on 127.0.0.1:9092 (data in ./data; metadata in etcd when KAFSCALE_ETCD_ENDPOINTS is set)
	KAFSCALE_BROKER_ADDR=$${KAFSCALE_BROKER_ADDR:-127.0.0.1:9092} KAFSCALE_DATA_DIR=$${KAFSCALE_DATA_DIR:-./data} $(BROKER)

demo: build ## Start a broker with a small generated workload and print the console URL (Ctrl-C stops it)
	./scripts/demo.sh

tools: ## Install the test tools into .venv/ and .tools/ (and kcat)
	./scripts/install-test-tools.sh

test: lint tools test-unit test-helm test-e2e ## Everything: lint first (it fails fast), unit tests, Helm chart checks, end-to-end tests with real clients

# Release profile: the tests then reuse the dependencies `make build` compiled and
# exercise the code as it ships. (Features that only dev-dependencies turn on, tokio's
# test-util and kafka-protocol's client, are compiled in by the tests and not by
# `make build`, so those crates and the ones above them are built once for each.)
test-unit: build-deps ## Rust unit and crate tests
	@if cargo nextest --version >/dev/null 2>&1; then cargo nextest run --release --workspace --no-tests=pass; else cargo test --release --workspace; fi

test-e2e: build ## End-to-end tests against the release broker (make tools first)
	KAFSCALE_BROKER_BIN=$(BROKER) $(PY) -m pytest -q tests

test-helm: build-deps ## Helm chart: lint, template + kubernetes-validate, sample CRs against the CRD schemas (make tools first)
	cargo build --release -p kafscale-operator
	KAFSCALE_OPERATOR_BIN=$(CARGO_TARGET_DIR)/release/kafscale-operator $(PY) -m pytest -q helm/tests

image: ## Build the kafscale/broker and kafscale/operator images (docker or podman; PREBUILT=1 copies the release binaries instead of compiling)
	./scripts/image.sh

crds: ## Regenerate helm/kafscale/crds from the operator's Rust types
	cargo run --release -p kafscale-operator -- crd --dir helm/kafscale/crds

# Clippy's own lints are in the code: codec/ and segstore/src/format/ deny unwrap,
# expect and indexing (they parse what clients and the object store send).
lint: build-deps ## rustfmt, clippy (warnings are errors), the vendored crates against their patches
	@cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	./scripts/vendor.sh all check

fmt:
	cargo fmt --all

bench: build-deps ## Run the benchmark suite (~10 min) and rewrite docs/benchmarks.md (BENCH_BOOTSTRAP=host:port: against another broker)
	./scripts/bench.sh

bench-peers: build ## This broker (local, s3s-fs), Tansu (memory, s3s-fs) and the sink, same loads in one run (~10 min; installs Tansu into .tools the first time); rewrites its section of docs/benchmarks.md (make tools first)
	KAFSCALE_BROKER_BIN=$(BROKER) $(PY) scripts/bench_peers.py --bench $(CARGO_TARGET_DIR)/release/kafscale-bench \
	  --seconds $${BENCH_SECONDS:-15} --rounds $${BENCH_ROUNDS:-1} $$([ "$${BENCH_SHARED:-0}" = 1 ] && echo --shared) \
	  --json docs/benchmarks-peers-results.jsonl --out docs/benchmarks.md

bench-local-io: build ## Local directory store written by the I/O threads against the shards' io_uring (KAFSCALE_LOCAL_IO), alternating runs (~5 min); rewrites its section of docs/benchmarks.md (make tools first)
	KAFSCALE_BROKER_BIN=$(BROKER) $(PY) scripts/local_io_bench.py --bench $(CARGO_TARGET_DIR)/release/kafscale-bench \
	  --seconds $${BENCH_SECONDS:-15} --rounds $${BENCH_ROUNDS:-3} $$([ "$${BENCH_SHARED:-0}" = 1 ] && echo --shared) \
	  --json docs/benchmarks-local-io-results.jsonl --out docs/benchmarks.md

profile-produce: build ## Sample the broker's CPU under an acks=all produce load with perf (flat profile and who allocates); prints it
	KAFSCALE_BROKER_BIN=$(BROKER) $(PY) scripts/profile_produce.py --bench $(CARGO_TARGET_DIR)/release/kafscale-bench

bench-tls: build ## Produce and consume over TLS against plaintext on one broker, alternating runs (~8 min): MB/s and broker CPU per GB; rewrites its section of docs/benchmarks.md (make tools first)
	KAFSCALE_BROKER_BIN=$(BROKER) $(PY) scripts/tls_bench.py --bench $(CARGO_TARGET_DIR)/release/kafscale-bench \
	  --seconds $${BENCH_SECONDS:-15} --rounds $${BENCH_ROUNDS:-3} $$([ "$${BENCH_SHARED:-0}" = 1 ] && echo --shared) \
	  --json docs/benchmarks-tls-results.jsonl --out docs/benchmarks.md

bench-cluster: build ## Cluster failover times (kill -9, SIGTERM) and 3-vs-1-broker throughput (~10 min); rewrites its section of docs/benchmarks.md (make tools first)
	KAFSCALE_BROKER_BIN=$(BROKER) $(PY) scripts/cluster_bench.py --out docs/benchmarks.md

# `make test` already fuzzes every target on stable (segstore/tests/fuzz.rs: a
# generated corpus and 20,000 mutations each, within test-unit); this target is
# the long coverage-guided run with cargo-fuzz (libFuzzer) when it is installed.
fuzz: ## Fuzz request frames, record batches, .kfs and .index parsing: 60 s each with cargo-fuzz, else 1,000,000 stable mutations each
	@if cargo fuzz --version >/dev/null 2>&1; then \
	  for t in frame record_batch segment index; do \
	    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=60) || exit 1; \
	  done; \
	else \
	  KAFSCALE_FUZZ_ITERATIONS=1000000 cargo test --release -p kafscale-segstore --test fuzz; \
	fi

clean-data: ## Remove ./data (the default broker's storage)
	rm -rf ./data
