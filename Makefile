# The two commands a new machine needs:
#   make demo   start local servers, run the demo, exit
#   make test   every test (unit, integration against real servers, doc tests)
CARGO ?= cargo

.PHONY: deps demo test lint bench doc

deps:
	@bash scripts/install-deps

demo: deps
	$(CARGO) run --quiet --example axum_service --features testkit,axum,metrics -- $(CONFIG)

test: deps
	$(CARGO) run --quiet --example quickstart --features testkit
	$(CARGO) run --quiet --example redis_lock --features testkit
	$(CARGO) run --quiet --example etcd_lock --features testkit
	$(CARGO) run --quiet --example topologies --features testkit
	$(CARGO) run --quiet --example service_registry --features testkit
	$(CARGO) run --quiet --example config_watch --features testkit
	$(CARGO) run --quiet --example telemetry --features testkit,metrics
	CARGO="$(CARGO)" bash scripts/check-demo-config-error
	$(CARGO) test --all-features --all-targets
	$(CARGO) test --all-features --doc

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --all-features

bench: deps
	$(CARGO) bench --features testkit
