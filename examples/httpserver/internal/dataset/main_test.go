package dataset

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests: a Read waiting
// for its next row must end with Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
