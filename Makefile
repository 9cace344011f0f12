# mdmd — common tasks. `make run` serves with embedded defaults; `make test` runs everything CI runs.
CARGO ?= cargo
SHELL := /bin/bash

.PHONY: run demo build release test arrows unit bench load floor enroll-cost chaos soak load-pg ise-bench scale console-bench fleet-bench ade-bench push-latency schema fuzz clean

run:
	$(CARGO) run --release -- serve

# A demo where everything finishes: 5 simulated iPhones, an in-process APNs stand-in, a throwaway
# push certificate; loopback only, its own state in ./demo-data and ./demo-certs (delete them to start over).
demo:
	$(CARGO) run --release -- serve --demo 5 --listen 127.0.0.1:8443 --data-dir ./demo-data --certs-dir ./demo-certs

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Imports between the rooms of src/ point one way (tests/arrows.rs; each violation as file:line: room -> room).
arrows:
	$(CARGO) test --test arrows

test: arrows
	$(CARGO) check --benches
	@if [ -n "$$MDMD_TEST_DATABASE_URL" ]; then echo "PostgreSQL suite: on (MDMD_TEST_DATABASE_URL)"; \
	elif (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then echo "PostgreSQL suite: on (127.0.0.1:5432)"; \
	else echo "PostgreSQL suite: SKIPPED (no server on 127.0.0.1:5432; set MDMD_TEST_DATABASE_URL to run it)"; fi
	$(CARGO) test --lib --bins --tests -- --test-threads=2
	@# Every server test again on PostgreSQL (a fresh database each), when there is one.
	@if [ -n "$$MDMD_TEST_DATABASE_URL" ] || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then \
		echo "== the server tests again, on PostgreSQL"; \
		MDMD_TEST_STORE=postgres $(CARGO) test --tests -- --test-threads=2; fi

bench:
	$(CARGO) bench

# Load test against a throwaway server on 127.0.0.1 (see docs/performance.md).
load: release
	bash tools/load.sh

# Connect requests beside a bare TLS endpoint in one run (DEVICES=16, BIN= another build).
floor: release
	bash tools/floor.sh

# Chaos at fleet size: 1,000 devices, instances SIGKILLed in turn; redb, then PostgreSQL behind two
# instances with PostgreSQL restarted once (N=, KILLS=, INTERVAL=, PG_RESTART=, MDMD_BENCH_DATABASE_URL=).
chaos: release
	bash tools/chaos.sh

# An hour at a steady load, sampled each minute and plotted (DEVICES=2000, MINUTES=60, OUT=soak-out;
# docs/performance.md): RSS, open files, store size, p99; identity and ACME renewals inside the hour.
soak: release
	bash tools/soak.sh

# Server CPU of a whole enrollment (three-phase and single), a fresh TLS connection per request,
# beside 16 RSA-2048 signatures (BEFORE=older/mdmd compares a build, N= devices, RUNS=).
enroll-cost: release
	bash tools/enroll-cost.sh

# redb vs PostgreSQL (one and two instances), same client (MDMD_BENCH_DATABASE_URL=, DEVICES=, ROUNDS=).
load-pg: release
	bash tools/load-pg.sh

# Cisco ISE query latency, store size and RSS with DEVICES= seeded devices (default 100,000).
ise-bench: release
	bash tools/ise-bench.sh

# 1,000,000 enrollments: store size, RSS, device page, single read, 100,000-target enqueue.
scale: release
	bash tools/scale.sh

# The web console's device list and device page with DEVICES= enrollments (default 100,000).
console-bench: release
	bash tools/console-bench.sh

# Blueprints at fleet size: edit → every command queued, sweeps, per-device reconcile (DEVICES=, default 100,000).
fleet-bench: release
	bash tools/fleet-bench.sh

# ADE sync at fleet size against the ADE API stand-in (DEVICES=, default 10,000).
ade-bench: release
	bash tools/ade-bench.sh

# Push figures: 10,000 simulated devices woken through the APNs stand-in (DEVICES=, ROUNDS=).
push-latency: release
	bash tools/push-latency.sh

# Regenerate src/protocol/schema.json from ../shared/apple-device-management (needs python3-yaml).
schema:
	python3 tools/gen_schema.py
	python3 tools/gen_ade.py

# Each fuzz target for FUZZ_SECONDS (libFuzzer via cargo-fuzz, installed if missing): the device
# request parser, SCEP PKIOperation, the profile-service body and templates, admin JSON commands.
# New inputs go to fuzz/corpus/<target>, crashes to fuzz/artifacts/<target> (both ignored by git).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= checkin scep profile_service admin_json
fuzz:
	@# cargo-fuzz wants nightly; RUSTC_BOOTSTRAP lets the stable toolchain build it.
	@command -v cargo-fuzz >/dev/null || RUSTC_BOOTSTRAP=1 $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do mkdir -p fuzz/corpus/$$t; done
	@cp fixtures/nanomdm-device-captures/*.plist fuzz/corpus/checkin/
	@cp fixtures/scep-request/PKCSReq.der fuzz/corpus/scep/
	@cp fuzz/seeds/profile_service/* profiles/*.mobileconfig fuzz/corpus/profile_service/
	@cp fuzz/seeds/admin_json/* fuzz/corpus/admin_json/
	set -e; cd fuzz && for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; \
	done

clean:
	$(CARGO) clean
