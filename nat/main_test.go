package nat_test

import (
	"os"
	"testing"

	"github.com/lbkit/lbkit/internal/nettest"
)

// TestMain fails the package when its tests changed the root network
// namespace: the syncers program whatever namespace their calling thread
// is in, so a test that called one outside Host.Do would do exactly that.
func TestMain(m *testing.M) { os.Exit(nettest.GuardRoot(m).Run()) }
