package nettest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NamePrefix starts the name of every namespace the harness creates. The
// full name is "lbk-<pid>-<seq>-<name>", so that namespaces left behind by a
// crashed test process can be told from those of a running one.
const NamePrefix = "lbk-"

// netnsDir is where named namespaces are bind-mounted, as iproute2 does, so
// that `ip netns exec` and `ip -n` reach them while debugging.
const netnsDir = "/run/netns"

var nsSeq atomic.Uint64

// namespace is one named network namespace owned by this process.
type namespace struct {
	name   string
	path   string
	handle netns.NsHandle
}

// newNamespace creates a fresh network namespace and pins it with a bind
// mount under /run/netns. The calling goroutine's thread is used for the
// unshare and is restored (or discarded) before return.
func newNamespace(short string) (*namespace, error) {
	name := fmt.Sprintf("%s%d-%d-%s", NamePrefix, os.Getpid(), nsSeq.Add(1), short)
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return nil, fmt.Errorf("nettest: %w", err)
	}
	path := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return nil, fmt.Errorf("nettest: create namespace file: %w", err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		mountErr := unix.Mount(self, path, "none", unix.MS_BIND, "")
		if err := netns.Set(orig); err != nil {
			// This thread is stuck in the new namespace: keep it locked
			// so that it dies with this goroutine.
			errc <- errors.Join(mountErr, fmt.Errorf("restore namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- mountErr
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("nettest: new namespace %s: %w", name, err)
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		removeNamespace(path)
		return nil, fmt.Errorf("nettest: open namespace %s: %w", name, err)
	}
	return &namespace{name: name, path: path, handle: h}, nil
}

// close kills what still runs inside the namespace, then unpins it.
func (n *namespace) close() error {
	killInNamespace(n.path)
	n.handle.Close()
	return removeNamespace(n.path)
}

func removeNamespace(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nettest: unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("nettest: remove %s: %w", path, err)
	}
	return nil
}

// killInNamespace sends SIGKILL to every process whose network namespace is
// the one pinned at path, so that a command a test left running cannot keep
// the namespace alive after it is unpinned.
func killInNamespace(path string) {
	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		return
	}
	procs, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc", p.Name(), "ns/net"), &st) != nil {
			continue
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// RemoveStale removes the namespaces under /run/netns that a test process
// created and did not remove because it died (their names carry a pid that
// no longer runs). Namespaces of running processes are left alone, so test
// binaries may run in parallel. It returns the names it removed.
func RemoveStale() ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nettest: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		pid, ok := ownerPID(e.Name())
		if !ok || processAlive(pid) {
			continue
		}
		path := filepath.Join(netnsDir, e.Name())
		killInNamespace(path)
		if err := removeNamespace(path); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// ownerPID extracts the pid from a harness namespace name.
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok {
		return 0, false
	}
	pidStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// doIn runs fn on a fresh goroutine whose OS thread is switched into ns and
// back. If switching back fails the thread stays locked and is destroyed
// when the goroutine ends, so no goroutine ever runs in the wrong namespace.
// A panic in fn is re-raised on the caller's goroutine.
func doIn(ns netns.NsHandle, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("nettest: current namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("nettest: enter namespace: %w", err)}
			return
		}
		var r result
		func() {
			defer func() {
				if v := recover(); v != nil {
					r = result{panicked: true, value: v}
				}
			}()
			r.err = fn()
		}()
		if err := netns.Set(orig); err != nil {
			r.err = errors.Join(r.err, fmt.Errorf("nettest: restore namespace: %w", err))
			done <- r // the thread stays locked and exits with the goroutine
			return
		}
		runtime.UnlockOSThread()
		done <- r
	}()
	r := <-done
	if r.panicked {
		panic(r.value)
	}
	return r.err
}
