package nftables

import (
	"errors"
	"fmt"
	"syscall"
)

// ValidationError reports an object that cannot be programmed. It is
// returned before anything is sent to the kernel, so nothing was changed.
type ValidationError struct {
	// Path locates the bad object, e.g. `chains["svc-a"].rules[1].stmts[2]`
	// or `sets["eps"].elements[4]`.
	Path   string
	Reason string
}

// Error implements error.
func (e *ValidationError) Error() string {
	if e.Path == "" {
		return "nftables: invalid: " + e.Reason
	}
	return "nftables: invalid " + e.Path + ": " + e.Reason
}

// ErrNotFound is returned (wrapped) by Read when the owned table does not
// exist.
var ErrNotFound = errors.New("nftables: table not found")

// ErrOutcomeUnknown is wrapped in a KernelError when the batch was sent but
// its acknowledgements could not be read, so the engine cannot tell whether
// the kernel committed it. The engine forgets what it believed the kernel
// holds; the next Sync reads the table again.
var ErrOutcomeUnknown = errors.New("nftables: outcome of the batch is unknown")

// KernelError reports a batch the kernel refused (or whose outcome is
// unknown, see ErrOutcomeUnknown). A refused batch changed nothing: the
// kernel applies an nftables batch atomically. errors.Is(err, syscall.EEXIST)
// and the like work on it.
type KernelError struct {
	// Op is what failed: "apply", "read", "cleanup".
	Op string
	// Messages is the number of netlink messages in the batch.
	Messages int
	// Errno is the first errno found in Err, or 0.
	Errno syscall.Errno
	Err   error
}

// Error implements error.
func (e *KernelError) Error() string {
	return fmt.Sprintf("nftables: %s (%d messages): %v", e.Op, e.Messages, e.Err)
}

// Unwrap returns the underlying error.
func (e *KernelError) Unwrap() error { return e.Err }

func newKernelError(op string, msgs int, err error) *KernelError {
	ke := &KernelError{Op: op, Messages: msgs, Err: err}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		ke.Errno = errno
	}
	return ke
}
