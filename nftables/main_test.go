package nftables

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them (the
// engine starts none; echo servers of the labs stop at cleanup).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
