# The verbs everyone runs. `make test` is what CI runs.
GO ?= go

.PHONY: test vet fmt-check bench bench-peers bench-storage cover lint sdk-test dashboard-test

test: lint
	$(GO) test -race -count=1 -timeout 8m ./...
	cd benchmarks && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 5m ./...
	cd contrib/otel && $(GO) vet ./... && $(GO) test -race -count=1 ./...
	cd bridge/nats && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 5m ./...
	@if command -v node >/dev/null 2>&1; then $(MAKE) --no-print-directory sdk-test; \
	else echo "sdk-test: SKIPPED: node is not on PATH (the WuKongIM JS SDK interop test needs Node 20 and npm)"; fi
	@$(MAKE) --no-print-directory dashboard-test

# Interop test of examples/wkim with the official WuKongIM JS SDK (Node).
SDKTEST := examples/wkim/sdktest
sdk-test:
	@test -d $(SDKTEST)/node_modules || (cd $(SDKTEST) && npm ci --no-audit --no-fund)
	cd $(SDKTEST) && node --test interop.test.mjs

# The dashboard in a real headless Chromium (own module: chromedp stays out
# of go.mod). Prints SKIPPED where no Chromium is installed.
dashboard-test:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$CHROME" ]; then \
		cd dashboard/browsertest && $(GO) vet ./... && $(GO) test -race -count=1 -timeout 5m ./...; \
	else echo "dashboard-test: SKIPPED: chromium is not installed (apt-get install -y chromium)"; fi

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Benchmarks of this package (run by hand; not part of CI).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 6 . | tee bench.txt

cover:
	$(GO) test -race -coverprofile=cover.out ./... && $(GO) tool cover -func=cover.out | tail -1

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

lint: vet fmt-check
	$(GO) run $(STATICCHECK) ./...

# Storage-engine comparison for the journal (own module: compiles pebble and
# cgo zstd, several minutes cold, so it is kept out of `make test`; run by hand).
bench-storage:
	cd journal/bench && $(GO) vet ./... && ./run.sh

# Side-by-side comparison with peers (own module; ~15 minutes; run by hand).
bench-peers:
	cd benchmarks && $(GO) test -run '^$$' -bench . -benchmem -count 6 | tee new.txt && ./table.sh new.txt
