package exporterhttp_test

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/exporterkit/exporter/internal/redistest"
	"go.uber.org/goleak"
)

// realRedis is the redis-server the whole package shares (each test
// isolates itself by key prefix), started by TestMain; realRedisErr is why
// there is none.
var (
	realRedis    *redistest.Server
	realRedisErr error
)

// TestMain starts the real Redis, runs the tests, stops it, and then
// checks that no goroutine outlived its test.
func TestMain(m *testing.M) {
	realRedis, realRedisErr = redistest.Start(redistest.Options{})
	code := m.Run()
	if realRedis != nil {
		if err := realRedis.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping redis-server:", err)
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// redisAddr returns the real Redis's address. It skips the test when
// redis-server is not installed, unless redistest.Required.
func redisAddr(t *testing.T) string {
	t.Helper()
	if realRedisErr != nil {
		if errors.Is(realRedisErr, redistest.ErrNotInstalled) && !redistest.Required() {
			t.Skipf("real Redis tests skipped: %v", realRedisErr)
		}
		t.Fatalf("starting redis-server: %v", realRedisErr)
	}
	return realRedis.Addr
}
