package exporter

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the suite, stops the real servers it started (see
// helpers_test.go), and then checks that no goroutine outlived its test.
// Run as a child with EXPORTER_TEST_WORKER set, the test binary is instead
// the worker process of TestWorkerKilled.
func TestMain(m *testing.M) {
	if addr := os.Getenv(workerEnv); addr != "" {
		os.Exit(workerMain(addr))
	}
	if addr := os.Getenv(durableWorkerEnv); addr != "" {
		os.Exit(durableWorkerMain(addr))
	}
	code := m.Run()
	stopSharedServers()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
