package nftables

import (
	"testing"

	"github.com/lbkit/lbkit/internal/nettest"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them (the
// engine starts none; echo servers of the labs stop at cleanup).
// It also fails them when they changed the root network namespace
// (nettest.GuardRoot): the engine programs the namespace of the calling
// thread, so a test that called it outside Host.Do would do just that.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(nettest.GuardRoot(m))
}
