package arp

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/lbkit/lbkit/internal/nettest"
)

// TestMain turns the test binary into the announcer helper process of the
// failover test when helperEnv is set (see kernel_test.go), and otherwise
// runs the tests and fails if any goroutine is left behind or the root
// network namespace changed.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(announcerHelper())
	}
	goleak.VerifyTestMain(nettest.GuardRoot(m))
}
