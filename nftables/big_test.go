package nftables

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// TestKernelBigBatch applies the 10k services x 10 endpoints ruleset issue
// 6 asks for as one batch in a namespace: 10 003 chains, 20 006 rules, a
// verdict map of 10 000 elements and 100 000 endpoint elements in 128
// data maps. With the
// system's default socket buffers the same batch cannot even be sent; with
// the engine's sizing it commits.
func TestKernelBigBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("kernel test")
	}
	_, h := kernelHost(t)
	ctx := context.Background()
	rs := scaleRuleset(10000, 10)
	tx := Full(rs)

	e := dialIn(t, h, scaleTable)
	e.keepBuffers = true
	err := e.Apply(ctx, tx)
	var ke *KernelError
	if !errors.As(err, &ke) || !(errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.ENOBUFS)) {
		t.Fatalf("with default buffers: got %v, want EMSGSIZE or ENOBUFS", err)
	}
	t.Logf("with default buffers: %v", err)
	if _, err := e.Read(ctx); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a batch refused at send time must leave nothing: Read = %v", err)
	}

	e.keepBuffers = false
	start := time.Now()
	if err := e.Apply(ctx, tx); err != nil {
		t.Fatal(err)
	}
	st := e.LastStats()
	t.Logf("cold apply of 10k x 10: %v (%d messages, ~%d KiB, compile %v, commit %v)", time.Since(start), st.Messages, st.Bytes>>10, st.Compile, st.Commit)

	start = time.Now()
	got, err := e.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("read back: %v", time.Since(start))
	if len(got.Chains) != 10003 {
		t.Errorf("read %d chains, want 10003", len(got.Chains))
	}
	nEps := 0
	for _, s := range got.Sets {
		if s.Name != "services4" {
			nEps += len(s.Elements)
		}
	}
	if nEps != 100000 {
		t.Errorf("the endpoint maps hold %d elements, want 100000", nEps)
	}
	if svc := got.Set("services4"); svc == nil || len(svc.Elements) != 10000 {
		t.Errorf("services4 does not hold 10000 elements")
	}
	// An element-only change in the full table.
	start = time.Now()
	if err := e.Apply(ctx, flipEndpoint(4321, 3, 10, 0)); err != nil {
		t.Fatal(err)
	}
	t.Logf("one endpoint flipped: %v", time.Since(start))
}

// TestKernelAckOverflow shows the trap the engine's buffer sizing avoids:
// a batch small enough to send but with more acknowledgements than the
// default receive buffer holds is committed by the kernel, and only then
// does reading the acknowledgements fail with ENOBUFS. The engine reports
// that as ErrOutcomeUnknown (not as a refused batch), forgets what it
// knew, and the table does hold the batch. With sizing, the same batch
// succeeds cleanly.
func TestKernelAckOverflow(t *testing.T) {
	if testing.Short() {
		t.Skip("kernel test")
	}
	_, h := kernelHost(t)
	ctx := context.Background()
	batch := func(prefix string) *Transaction {
		tx := &Transaction{}
		tx.AddTable()
		for i := 0; i < 1500; i++ {
			tx.AddChain(Chain{Name: fmt.Sprintf("%s-%04d", prefix, i)})
		}
		return tx
	}
	e := dialIn(t, h, scaleTable)
	e.keepBuffers = true
	err := e.Apply(ctx, batch("a"))
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, syscall.ENOBUFS) {
		t.Fatalf("got %v, want ErrOutcomeUnknown wrapping ENOBUFS", err)
	}
	got, err := e.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Chains) != 1500 {
		t.Fatalf("after the overflow the kernel holds %d chains, want the whole batch (1500)", len(got.Chains))
	}
	e.keepBuffers = false
	if err := e.Apply(ctx, batch("b")); err != nil {
		t.Fatalf("with sizing: %v", err)
	}
}
