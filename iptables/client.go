package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	goiptables "github.com/coreos/go-iptables/iptables"
)

// Interface is what a program needs from iptables for one address family.
// Client implements it on the kernel, Fake in memory.
type Interface interface {
	// Family returns the address family.
	Family() Family
	// Backend returns the backend the tools program (legacy or nf_tables).
	Backend() Backend

	// Apply renders s and applies it with one iptables-restore --noflush.
	Apply(ctx context.Context, s *Sync) error
	// Restore applies the text of b (rendered by the caller, one table
	// after the other, all committed) with one iptables-restore --noflush.
	Restore(ctx context.Context, b *Buffer) error
	// RestoreText applies text as is with one iptables-restore --noflush.
	RestoreText(ctx context.Context, text []byte) error

	// Save returns the parsed content of table t.
	Save(ctx context.Context, t Table) (*TableDump, error)
	// SaveText returns iptables-save -t t output.
	SaveText(ctx context.Context, t Table) ([]byte, error)
	// ListChains returns the chains of table t whose names start with
	// prefix ("" for all), in iptables-save order.
	ListChains(ctx context.Context, t Table, prefix string) ([]ChainName, error)

	// EnsureRule adds r to chain c of table t at pos unless an identical
	// rule is already in the chain. It reports whether it added the rule.
	EnsureRule(ctx context.Context, t Table, c ChainName, pos Position, r *Rule) (bool, error)
	// DeleteRule deletes the first rule of chain c identical to r; a
	// missing rule (or chain) is not an error.
	DeleteRule(ctx context.Context, t Table, c ChainName, r *Rule) error
	// EnsureJump makes sure chain from (typically a built-in chain) holds
	// the rule "-m comment --comment COMMENT -j to" (no comment match when
	// comment is empty), creating the user-defined chain to when it does
	// not exist. It reports whether it added the rule.
	EnsureJump(ctx context.Context, t Table, from, to ChainName, pos Position, comment string) (bool, error)
	// DeleteJump removes the rule EnsureJump adds; nothing to remove is
	// not an error.
	DeleteJump(ctx context.Context, t Table, from, to ChainName, comment string) error
}

// Config configures a Client. The zero value is IPv4 on the system's
// default backend with the os/exec runner and no logging.
type Config struct {
	Family Family
	// Backend forces iptables-legacy* or iptables-nft* binaries; the
	// default (BackendAuto) uses iptables / iptables-restore /
	// iptables-save as installed and detects which backend they use.
	Backend Backend
	// Runner runs iptables-restore, iptables-save and iptables --version;
	// nil means ExecRunner. The rule operations (EnsureRule, EnsureJump,
	// DeleteRule, DeleteJump) go through go-iptables, which runs the
	// iptables binary itself from the calling goroutine's thread.
	Runner Runner
	// Logger receives debug records of each restore; nil discards.
	Logger *slog.Logger
	// LockWait bounds how long the tools wait for the xtables lock
	// (--wait=SECONDS, rounded up); 0 waits as long as ctx allows.
	LockWait time.Duration
}

// Client programs iptables for one family through the iptables binaries:
// one iptables-restore --noflush --wait per Apply, iptables-save for
// reading, go-iptables for single-rule operations. It is safe for
// concurrent use: Apply calls are serialized (they share a render buffer),
// and every restore, from Apply, Restore or RestoreText, waits for the
// xtables lock (--wait), so the kernel sees one at a time.
//
// Every command runs on the calling goroutine's thread. To program another
// network namespace, call the Client (and create it) from a goroutine
// locked to a thread switched into that namespace.
type Client struct {
	cfg     Config
	version Version
	runner  Runner
	log     *slog.Logger
	rules   ruleOps

	restoreBin, saveBin string

	mu  sync.Mutex
	buf *Buffer
}

var _ Interface = (*Client)(nil)

// ruleOps is the part of go-iptables the Client uses.
type ruleOps interface {
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	Delete(table, chain string, rulespec ...string) error
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
}

// New returns a Client for family f on the system's default backend.
func New(ctx context.Context, f Family) (*Client, error) {
	return NewWithConfig(ctx, Config{Family: f})
}

// NewWithConfig returns a Client configured by cfg. It runs
// "iptables --version" (or the forced backend's binary) to learn the
// version and the backend, and fails with ErrBinaryNotFound when the
// binaries are not installed.
func NewWithConfig(ctx context.Context, cfg Config) (*Client, error) {
	if !cfg.Family.Valid() {
		return nil, invalid("family", "unknown family %d", cfg.Family)
	}
	switch cfg.Backend {
	case BackendAuto, BackendLegacy, BackendNFT:
	default:
		return nil, invalid("backend", "unknown backend %q", string(cfg.Backend))
	}
	c := &Client{cfg: cfg, runner: cfg.Runner, log: cfg.Logger}
	if c.runner == nil {
		c.runner = ExecRunner{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.restoreBin = cfg.Backend.binary(cfg.Family, "-restore")
	c.saveBin = cfg.Backend.binary(cfg.Family, "-save")
	bin := cfg.Backend.binary(cfg.Family, "")

	out, stderr, err := run(ctx, c.runner, bin, []string{"--version"}, nil)
	if err != nil {
		return nil, fmt.Errorf("iptables: %s --version: %w (%s)", bin, err, stderr)
	}
	if c.version, err = parseVersion(string(out)); err != nil {
		return nil, err
	}
	if cfg.Backend != BackendAuto && c.version.Backend != cfg.Backend {
		return nil, fmt.Errorf("iptables: %s reports backend %s, want %s", bin, c.version.Backend, cfg.Backend)
	}
	proto := goiptables.ProtocolIPv4
	if cfg.Family == IPv6 {
		proto = goiptables.ProtocolIPv6
	}
	ipt, err := goiptables.New(goiptables.IPFamily(proto), goiptables.Path(bin), goiptables.Timeout(c.waitSeconds()))
	if err != nil {
		return nil, fmt.Errorf("iptables: go-iptables: %w", err)
	}
	if v1, v2, v3 := ipt.GetIptablesVersion(); v1 != c.version.Major || v2 != c.version.Minor || v3 != c.version.Patch {
		return nil, fmt.Errorf("iptables: go-iptables sees %s as %d.%d.%d, --version said %s", bin, v1, v2, v3, c.version)
	}
	c.rules = ipt
	c.buf = NewBuffer(cfg.Family)
	c.log.Debug("iptables client ready", "family", cfg.Family.String(), "version", c.version.String(),
		"restore", c.restoreBin)
	return c, nil
}

// waitSeconds returns LockWait in whole seconds, rounded up; 0 for no bound.
func (c *Client) waitSeconds() int {
	if c.cfg.LockWait <= 0 {
		return 0
	}
	return int(math.Ceil(c.cfg.LockWait.Seconds()))
}

// Family implements Interface.
func (c *Client) Family() Family { return c.cfg.Family }

// Backend implements Interface: the backend the binaries reported.
func (c *Client) Backend() Backend { return c.version.Backend }

// Version returns the version of the iptables binaries.
func (c *Client) Version() Version { return c.version }

// Apply implements Interface.
func (c *Client) Apply(ctx context.Context, s *Sync) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Reset()
	if err := s.Render(c.buf); err != nil {
		return err
	}
	if c.buf.Len() == 0 {
		return nil
	}
	return c.restore(ctx, c.buf.Bytes())
}

// Restore implements Interface.
func (c *Client) Restore(ctx context.Context, b *Buffer) error {
	if err := checkBuffer(c.cfg.Family, b); err != nil {
		return err
	}
	if b.Len() == 0 {
		return nil
	}
	return c.restore(ctx, b.Bytes())
}

func checkBuffer(f Family, b *Buffer) error {
	if b.Family() != f {
		return invalid("buffer", "rendered for %s, the client is %s", b.Family(), f)
	}
	if b.table != "" {
		return invalid("buffer", "table %s is not committed", b.table)
	}
	return nil
}

// RestoreText implements Interface.
func (c *Client) RestoreText(ctx context.Context, text []byte) error {
	return c.restore(ctx, text)
}

func (c *Client) restore(ctx context.Context, text []byte) error {
	args := []string{"--noflush", "--wait"}
	if s := c.waitSeconds(); s > 0 {
		args[1] = fmt.Sprintf("--wait=%d", s)
	}
	start := time.Now()
	_, stderr, err := run(ctx, c.runner, c.restoreBin, args, bytes.NewReader(text))
	if err != nil {
		if errors.Is(err, ErrBinaryNotFound) || ctx.Err() != nil {
			return fmt.Errorf("iptables: %s: %w", c.restoreBin, err)
		}
		re := newRestoreError(c.cfg.Family, text, stderr, err)
		c.log.Debug("iptables-restore failed", "binary", c.restoreBin, "line", re.Line, "text", re.Text,
			"exit", re.ExitCode, "stderr", stderr)
		return re
	}
	c.log.Debug("iptables-restore", "binary", c.restoreBin, "bytes", len(text), "duration", time.Since(start))
	return nil
}

// SaveText implements Interface.
func (c *Client) SaveText(ctx context.Context, t Table) ([]byte, error) {
	if !t.Valid() {
		return nil, invalid("table", "unknown table %q", string(t))
	}
	out, stderr, err := run(ctx, c.runner, c.saveBin, []string{"-t", string(t)}, nil)
	if err != nil {
		return nil, fmt.Errorf("iptables: %s -t %s: %w (%s)", c.saveBin, t, err, stderr)
	}
	return out, nil
}

// Save implements Interface.
func (c *Client) Save(ctx context.Context, t Table) (*TableDump, error) {
	out, err := c.SaveText(ctx, t)
	if err != nil {
		return nil, err
	}
	return tableFromSave(c.cfg.Family, t, out)
}

func tableFromSave(f Family, t Table, out []byte) (*TableDump, error) {
	d, err := ParseDump(f, out)
	if err != nil {
		return nil, err
	}
	if td := d.Table(t); td != nil {
		return td, nil
	}
	return &TableDump{Name: t}, nil
}

// ListChains implements Interface. It reads only the chain declarations of
// iptables-save's output.
func (c *Client) ListChains(ctx context.Context, t Table, prefix string) ([]ChainName, error) {
	out, err := c.SaveText(ctx, t)
	if err != nil {
		return nil, err
	}
	return ListChainNames(out, prefix), nil
}

// EnsureRule implements Interface with go-iptables (iptables -C, then -I
// or -A). go-iptables takes no context: ctx is checked before each command.
func (c *Client) EnsureRule(ctx context.Context, t Table, ch ChainName, pos Position, r *Rule) (bool, error) {
	args, err := ruleOpArgs(c.cfg.Family, t, ch, r)
	if err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	ok, err := c.rules.Exists(string(t), string(ch), args...)
	if err != nil {
		return false, fmt.Errorf("iptables: check rule in %s/%s: %w", t, ch, err)
	}
	if ok {
		return false, nil
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if pos == Append {
		err = c.rules.Append(string(t), string(ch), args...)
	} else {
		err = c.rules.Insert(string(t), string(ch), 1, args...)
	}
	if err != nil {
		return false, fmt.Errorf("iptables: %s rule to %s/%s: %w", pos, t, ch, err)
	}
	c.log.Debug("iptables rule added", "table", string(t), "chain", string(ch), "rule", r.String())
	return true, nil
}

func ruleOpArgs(f Family, t Table, ch ChainName, r *Rule) ([]string, error) {
	if !t.Valid() {
		return nil, invalid("table", "unknown table %q", string(t))
	}
	if !ch.IsBuiltin() {
		if err := ch.validateRef(); err != nil {
			return nil, &ValidationError{Field: "chain", Err: err}
		}
	}
	if r.Target != nil && !r.Target.tableOK(t) {
		return nil, invalid("target", "%T is not allowed in table %s", r.Target, t)
	}
	return r.Args(f)
}

// DeleteRule implements Interface.
func (c *Client) DeleteRule(ctx context.Context, t Table, ch ChainName, r *Rule) error {
	args, err := ruleOpArgs(c.cfg.Family, t, ch, r)
	if err != nil {
		return err
	}
	// iptables -C fails (exit 2, not 1) when the chain or the jump target
	// does not exist; neither can then hold the rule.
	for _, name := range []ChainName{ch, jumpTarget(r.Target)} {
		if name == "" || name.IsBuiltin() {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, err := c.rules.ChainExists(string(t), string(name))
		if err != nil {
			return fmt.Errorf("iptables: list %s/%s: %w", t, name, err)
		}
		if !ok {
			return nil
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ok, err := c.rules.Exists(string(t), string(ch), args...)
	if err != nil {
		return fmt.Errorf("iptables: check rule in %s/%s: %w", t, ch, err)
	}
	if !ok {
		return nil
	}
	if err := c.rules.Delete(string(t), string(ch), args...); err != nil {
		return fmt.Errorf("iptables: delete rule from %s/%s: %w", t, ch, err)
	}
	c.log.Debug("iptables rule deleted", "table", string(t), "chain", string(ch), "rule", r.String())
	return nil
}

// jumpRule is the rule EnsureJump and DeleteJump manage.
func jumpRule(to ChainName, comment string) *Rule {
	r := &Rule{Target: Jump{Chain: to}}
	if comment != "" {
		r.Matches = []Match{Comment(comment)}
	}
	return r
}

// EnsureJump implements Interface.
func (c *Client) EnsureJump(ctx context.Context, t Table, from, to ChainName, pos Position, comment string) (bool, error) {
	r := jumpRule(to, comment)
	if _, err := ruleOpArgs(c.cfg.Family, t, from, r); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	ok, err := c.rules.ChainExists(string(t), string(to))
	if err != nil {
		return false, fmt.Errorf("iptables: list %s/%s: %w", t, to, err)
	}
	if !ok {
		if err := c.rules.NewChain(string(t), string(to)); err != nil {
			// Somebody may have created it meanwhile.
			if again, err2 := c.rules.ChainExists(string(t), string(to)); err2 != nil || !again {
				return false, fmt.Errorf("iptables: create chain %s/%s: %w", t, to, err)
			}
		}
	}
	return c.EnsureRule(ctx, t, from, pos, r)
}

// DeleteJump implements Interface.
func (c *Client) DeleteJump(ctx context.Context, t Table, from, to ChainName, comment string) error {
	return c.DeleteRule(ctx, t, from, jumpRule(to, comment))
}
