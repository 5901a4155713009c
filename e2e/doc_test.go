// Package e2e tests pushrelay as a real process, driven by the real parts
// its users have: the Python client that Windmill scripts use, the
// client_golang push package, a Prometheus server scraping it, and the
// reference Pushgateway it must be indistinguishable from.
//
// TestMain builds ./cmd/pushrelay once (with the race detector when the
// tests run with -race; a process reporting a data race fails its test).
// Every test starts its own processes on free loopback ports, with their
// logs in files that are printed when the test fails.
//
// # Dependencies
//
// The tests drive Debian packages: prometheus (/usr/bin/prometheus),
// prometheus-pushgateway (/usr/bin/prometheus-pushgateway) and
// python3-prometheus-client (imported by /usr/bin/python3). `make deps`
// installs them. A test whose tool is missing is skipped, or fails when
// PUSHRELAY_E2E=1 or CI is set, so that CI cannot pass without running it.
// All tests are skipped with -short.
//
// # Caveats
//
// The differential test compares pushrelay with Pushgateway 1.5.1, the
// Debian version, while the contract is Pushgateway 1.11.3. The differences
// that are tolerated (version differences and deliberate pushrelay choices)
// are listed in one place, in diff_test.go; everything else must match.
package e2e
