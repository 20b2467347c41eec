package nftables

import (
	"context"
	"fmt"
	"sync"
)

// Fake is an in-memory Interface: it validates and encodes transactions
// exactly as Engine does, then applies them to a model of the table with
// the kernel's semantics for what the engine sends (a batch is atomic; a
// missing chain, set or element is ENOENT; deleting a chain that another
// rule or a verdict map element still refers to, or a set a rule uses, is
// EBUSY, while a chain's own rules go with it; re-adding an element
// with other data or an overlapping interval is EEXIST). Dump shows the
// table as nft text. Use it to test code built on the engine without root.
type Fake struct {
	mu    sync.Mutex
	m     *model
	state *Ruleset
	// Applied counts the batches the Fake accepted.
	Applied int
}

var _ Interface = (*Fake)(nil)

// NewFake returns a Fake owning table t (which does not exist yet).
func NewFake(t Table) *Fake { return &Fake{m: newModel(t)} }

// Table implements Interface.
func (f *Fake) Table() Table { return f.m.t }

// Apply implements Interface.
func (f *Fake) Apply(ctx context.Context, tx *Transaction) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if tx.Empty() {
		return nil
	}
	if err := f.apply(tx, f.m.schema()); err != nil {
		return err
	}
	f.state = nil
	return nil
}

func (f *Fake) apply(tx *Transaction, sc *schema) error {
	if err := ValidateTable(f.m.t); err != nil {
		return err
	}
	if err := validateTx(sc, tx); err != nil {
		return err
	}
	comp := newCompiler(f.m.t, sc.knownSets(), &recorder{})
	if err := comp.compile(tx); err != nil {
		return &ValidationError{Reason: err.Error()}
	}
	if err := f.m.apply(tx); err != nil {
		return newKernelError("apply", comp.msgs, err)
	}
	f.Applied++
	return nil
}

// Sync implements Interface.
func (f *Fake) Sync(ctx context.Context, desired *Ruleset) (*Transaction, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sync(ctx, desired)
}

// Reconcile implements Interface.
func (f *Fake) Reconcile(ctx context.Context, desired *Ruleset) (*Transaction, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = nil
	return f.sync(ctx, desired)
}

func (f *Fake) sync(ctx context.Context, desired *Ruleset) (*Transaction, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var sc *schema
	if f.state != nil {
		sc = f.m.schema()
	}
	tx, _, err := plan(f.m.t, f.state, sc, desired, f.read)
	if err != nil {
		return nil, err
	}
	if !tx.Empty() {
		if err := f.apply(tx, f.m.schema()); err != nil {
			f.state = nil
			return tx, err
		}
	}
	f.state = desired
	return tx, nil
}

// Read implements Interface.
func (f *Fake) Read(ctx context.Context) (*Ruleset, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return f.read()
}

func (f *Fake) read() (*Ruleset, error) {
	rs := f.m.ruleset()
	if rs == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, f.m.t)
	}
	return Canonical(f.m.t, rs)
}

// Cleanup implements Interface.
func (f *Fake) Cleanup(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	f.state = nil
	if !f.m.exists {
		return nil
	}
	tx := &Transaction{}
	tx.DeleteTable()
	return f.m.apply(tx)
}

// Dump returns the table as an nft script (Render), or "" when the table
// does not exist.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs := f.m.ruleset()
	if rs == nil {
		return ""
	}
	return Render(f.m.t, rs)
}

// Tamper applies tx to the table as someone else would (another program
// running nft): the Fake's Sync does not see it until Reconcile. It is not
// part of Interface; drift tests use it.
func (f *Fake) Tamper(tx *Transaction) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m.apply(tx)
}
