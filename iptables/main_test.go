package iptables

import (
	"testing"

	"github.com/lbkit/lbkit/internal/nettest"
	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (a
// command still being waited for, say).
// It also fails them when they changed the root network namespace
// (nettest.GuardRoot): the engine programs the namespace of the calling
// thread, so a test that called it outside Host.Do would do just that.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(nettest.GuardRoot(m))
}
