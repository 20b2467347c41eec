package iptables

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (a
// command still being waited for, say).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
