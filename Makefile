# Targets for people and CI. `make help` lists them; CI runs .ci/run, which
# runs `make lint` and `make test`. Tools run with `go run tool@version` so
# they never become requirements in the library's go.mod.

# staticcheck 2026.2.2. The module proxy serves staticcheck's releases by
# their v0 versions only (2026.2.2 is v0.8.2); this is the newest, and it
# builds and runs with Go 1.26.
STATICCHECK_VERSION := v0.8.2

.DEFAULT_GOAL := help
.PHONY: help test example serve lint bench fuzz-smoke fuzz soak screenshot exportctl

help: ## List the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { printf "  %-11s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# The browser test of the example server's page is a module of its own, so
# that the library's go.mod never requires chromedp; go test ./... does not
# enter it, so test, lint and screenshot name it.
BROWSERTEST := examples/httpserver/browsertest

# exportctl is a module of its own too (cobra is its requirement, never the
# library's); go test ./... does not enter it, so test and lint name it.
EXPORTCTL := cmd/exportctl

# EXPORTER_REQUIRE_REDIS=1 turns a missing redis-server into a failure, never
# a skip; EXPORTER_REQUIRE_BROWSER=1 does the same for a missing Chromium.
test: ## Run all tests with -race, on real Redis and in headless Chromium too (installs them if missing; what CI runs)
	bash scripts/ensure-redis.sh
	EXPORTER_REQUIRE_REDIS=1 go test -race -count=1 -timeout 15m ./...
	cd $(EXPORTCTL) && EXPORTER_REQUIRE_REDIS=1 go test -race -count=1 -timeout 10m ./...
	$(MAKE) fuzz-smoke
	EXPORTER_REQUIRE_REDIS=1 go test -race -v -run '^TestSoak$$' -count=1 -timeout 5m . -soak 20s
	bash scripts/ensure-chromium.sh
	cd $(BROWSERTEST) && EXPORTER_REQUIRE_REDIS=1 EXPORTER_REQUIRE_BROWSER=1 go test -race -count=1 -timeout 5m ./...

# go test fuzzes one target per invocation. The seeds (f.Add and
# testdata/fuzz/<target>/) also run as plain tests in every go test.
fuzz-smoke: ## Fuzz each target for 3s (part of make test)
	go test -run '^$$' -fuzz '^FuzzValidID$$' -fuzztime 3s .
	go test -run '^$$' -fuzz '^FuzzJobCodec$$' -fuzztime 3s .
	go test -run '^$$' -fuzz '^FuzzChunkingCopy$$' -fuzztime 3s .
	go test -run '^$$' -fuzz '^FuzzDownload$$' -fuzztime 3s .

FUZZTIME ?= 60s
fuzz: ## Fuzz each target for FUZZTIME (default 60s); failing inputs land in testdata/fuzz/
	go test -run '^$$' -fuzz '^FuzzValidID$$' -fuzztime $(FUZZTIME) .
	go test -run '^$$' -fuzz '^FuzzJobCodec$$' -fuzztime $(FUZZTIME) .
	go test -run '^$$' -fuzz '^FuzzChunkingCopy$$' -fuzztime $(FUZZTIME) .
	go test -run '^$$' -fuzz '^FuzzDownload$$' -fuzztime $(FUZZTIME) .

# -v because go test shows a passing test's output only with it, and the
# soak's figures are its point.
SOAK ?= 2m
soak: ## Run the load and soak test on real Redis for SOAK (default 2m) and print its figures
	bash scripts/ensure-redis.sh
	EXPORTER_REQUIRE_REDIS=1 go test -race -v -run '^TestSoak$$' -count=1 -timeout 10m . -soak $(SOAK)

example: ## Run the example program (examples/basic)
	go run ./examples/basic

# SERVEFLAGS="-addr 127.0.0.1:8081" picks another address; REDIS_URL another Redis.
serve: ## Run the example HTTP service and its page (examples/httpserver) on http://127.0.0.1:8080
	go run ./examples/httpserver $(SERVEFLAGS)

# go mod tidy -diff prints what tidy would change and fails, and leaves go.mod
# and go.sum as they are, so nothing needs restoring.
lint: ## Check gofmt, go vet, staticcheck and go mod tidy (changes no file)
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	go mod tidy -diff
	cd $(BROWSERTEST) && go vet ./... && go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./... && go mod tidy -diff
	cd $(EXPORTCTL) && go vet ./... && go run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./... && go mod tidy -diff

# The browser tests take the pictures of the page and the dashboard that the
# README shows.
screenshot: ## Run the browser tests and write their screenshots to docs/httpserver.png and docs/dashboard.png
	bash scripts/ensure-redis.sh
	bash scripts/ensure-chromium.sh
	cd $(BROWSERTEST) && EXPORTER_REQUIRE_REDIS=1 EXPORTER_REQUIRE_BROWSER=1 go test -v -count=1 -timeout 5m -run '^TestPage$$' . -update-screenshot
	cd $(BROWSERTEST) && EXPORTER_REQUIRE_REDIS=1 EXPORTER_REQUIRE_BROWSER=1 go test -v -count=1 -timeout 5m -run '^TestDashboard$$' . -update-dashboard-screenshot

exportctl: ## Build exportctl into ./exportctl (a module of its own, under cmd/exportctl)
	go build -C $(EXPORTCTL) -o ../../exportctl .

bench: ## Run the benchmark program (exporter vs raw go-redis; BENCHFLAGS="-quick -reps 1" for a smoke run), then the Go micro-benchmarks
	go run ./bench $(BENCHFLAGS)
	go test -run '^$$' -bench . -benchmem .
