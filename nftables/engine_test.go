package nftables

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/mdlayher/netlink"
)

// fakeBatcher records the calls of a batch and fails Flush as told.
type fakeBatcher struct {
	recorder
	flushes  int
	flushErr error
}

func (f *fakeBatcher) Flush() error {
	f.flushes++
	return f.flushErr
}

// noTable answers every dump as the kernel does when the table is missing.
type noTable struct{}

func (noTable) Execute(netlink.Message) ([]netlink.Message, error) {
	return nil, &netlink.OpError{Op: "receive", Err: syscall.ENOENT}
}

func TestNewEngineWithInjectedConnections(t *testing.T) {
	ctx := context.Background()
	if _, err := New(testTable, nil, noTable{}); err == nil {
		t.Error("New accepted a nil Batcher")
	}
	b := &fakeBatcher{}
	e, err := New(testTable, b, noTable{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, Full(sampleRuleset())); err != nil {
		t.Fatal(err)
	}
	if b.flushes != 1 || len(b.calls) == 0 {
		t.Fatalf("one Apply must be one Flush of a non-empty batch: %d flushes, %d calls", b.flushes, len(b.calls))
	}
	if st := e.LastStats(); st.Ops != Full(sampleRuleset()).Len() || st.Messages < len(b.calls) {
		t.Errorf("stats %+v for %d calls", st, len(b.calls))
	}

	// A bad transaction never reaches the Batcher.
	bad := &Transaction{}
	bad.AddRule("svc-a", R(Jump("missing")))
	var ve *ValidationError
	if err := e.Apply(ctx, bad); !errors.As(err, &ve) || b.flushes != 1 {
		t.Fatalf("got %v after %d flushes, want a ValidationError and no flush", err, b.flushes)
	}

	for _, tc := range []struct {
		name    string
		err     error
		errno   syscall.Errno
		unknown bool
	}{
		{"refused", &netlink.OpError{Op: "receive", Err: syscall.EBUSY}, syscall.EBUSY, false},
		{"not sent", &netlink.OpError{Op: "send-messages", Err: os.NewSyscallError("sendmsg", syscall.EMSGSIZE)}, syscall.EMSGSIZE, false},
		{"acks lost", &netlink.OpError{Op: "receive", Err: os.NewSyscallError("recvmsg", syscall.ENOBUFS)}, syscall.ENOBUFS, true},
		{"deadline", &netlink.OpError{Op: "receive", Err: os.ErrDeadlineExceeded}, 0, true},
	} {
		b.flushErr = tc.err
		// After a failure the engine forgets and rereads the (here
		// missing) table, so the batch must make sense on an empty one.
		tx := &Transaction{}
		tx.AddTable()
		tx.AddChain(Chain{Name: "x"})
		err := e.Apply(ctx, tx)
		var ke *KernelError
		if !errors.As(err, &ke) {
			t.Fatalf("%s: got %v, want a KernelError", tc.name, err)
		}
		if ke.Errno != tc.errno || errors.Is(err, ErrOutcomeUnknown) != tc.unknown {
			t.Errorf("%s: got %v (errno %v), want errno %v, unknown outcome %v", tc.name, err, ke.Errno, tc.errno, tc.unknown)
		}
	}
}
