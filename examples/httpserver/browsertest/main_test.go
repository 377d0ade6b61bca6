package browsertest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: the browser's,
// the server's and Redis's harness goroutines must all end with them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
