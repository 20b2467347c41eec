package vmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Accelerators for Machine.Accel and Options.Accel.
const (
	// AccelAuto tries KVM and falls back to TCG when KVM does not work.
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	// AccelTCG is qemu's software emulation; slow but works everywhere.
	AccelTCG = "tcg"
)

// QEMUBinary is the emulator the harness runs.
const QEMUBinary = "qemu-system-x86_64"

// Machine describes one qemu guest.
type Machine struct {
	// Kernel and Initrd are the host paths of the image and initramfs.
	Kernel, Initrd string
	// Append is added to the kernel command line.
	Append string
	// MemoryMB and CPUs size the guest.
	MemoryMB, CPUs int
	// Accel is AccelKVM or AccelTCG.
	Accel string
}

// KernelCmdline returns the guest kernel's command line: the console on the
// first serial port, reboot (which qemu turns into exit) right after a
// panic, and quiet so that the console carries mostly test output.
func (m Machine) KernelCmdline() string {
	return strings.TrimSpace("console=ttyS0 panic=-1 quiet loglevel=3 " + m.Append)
}

// Args returns qemu's command line (without the binary): no display, no
// default devices, the serial console on standard output, no reboot. A
// Machine without Kernel boots only the firmware, which finds nothing to
// boot and waits forever: a real hung guest, which the tests use.
func (m Machine) Args() []string {
	args := []string{
		"-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot",
		"-accel", m.Accel,
		"-m", strconv.Itoa(m.MemoryMB), "-smp", strconv.Itoa(m.CPUs),
	}
	if m.Kernel != "" {
		args = append(args, "-kernel", m.Kernel, "-initrd", m.Initrd, "-append", m.KernelCmdline())
	}
	if m.Accel == AccelKVM {
		args = append(args, "-cpu", "host")
	}
	return args
}

// KVMUsable reports why /dev/kvm cannot be used, or nil when it opens,
// speaks API version 12 and creates a VM. A nil error does not prove that
// a guest will run: on some nested hosts KVM accepts a VM and then hangs
// it, which is why AccelAuto also watches the first boot.
func KVMUsable() error {
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/kvm: %w", err)
	}
	defer unix.Close(fd)
	const kvmGetAPIVersion, kvmCreateVM = 0xAE00, 0xAE01
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("KVM_GET_API_VERSION: %w", errno)
	}
	if v != 12 {
		return fmt.Errorf("KVM API version %d, want 12", v)
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Errorf("KVM_CREATE_VM: %w", errno)
	}
	unix.Close(int(vm))
	return nil
}

// errNoLife means the guest did not start its init within the liveness
// deadline; AccelAuto then retries with TCG.
var errNoLife = errors.New("vmtest: guest showed no sign of life")

// noLifeError is errNoLife with how qemu ended; Unwrap gives qemu's error
// (nil when the deadline killed it), Is matches errNoLife.
type noLifeError struct{ qemu error }

func (e *noLifeError) Error() string {
	if e.qemu == nil {
		return errNoLife.Error()
	}
	return fmt.Sprintf("%v (qemu: %v)", errNoLife, e.qemu)
}
func (e *noLifeError) Is(target error) bool { return target == errNoLife }
func (e *noLifeError) Unwrap() error        { return e.qemu }

// boot is one qemu run.
type boot struct {
	Console  *Console
	Tail     []string // last console lines, for failure reports
	TimedOut bool
	// QEMUErr is qemu's exit error, if it failed.
	QEMUErr error
	// Start, Init, Modules, Done and Exit are when qemu started, the
	// init reported, the modules were loaded, the init reported DONE and
	// qemu exited (zero when it did not happen).
	Start, Init, Modules, Done, Exit time.Time
}

const tailLines = 40

// runQEMU boots m, streams the cleaned console to out and parses it. When
// liveness is positive and the init does not report within it (or qemu
// ends before), qemu is killed, the console it printed is dropped and
// errNoLife returned. After
// timeout the guest is killed and the boot marked TimedOut.
func runQEMU(ctx context.Context, m Machine, nonce string, timeout, liveness time.Duration, out, errOut io.Writer) (*boot, error) {
	cmd := exec.Command(QEMUBinary, m.Args()...)
	cmd.Stderr = errOut
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	b := &boot{Console: NewConsole(nonce), Start: time.Now()}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vmtest: start %s: %w", QEMUBinary, err)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		r := bufio.NewReaderSize(pipe, 64*1024)
		for {
			s, err := r.ReadString('\n')
			if s != "" {
				lines <- CleanConsoleLine(s)
			}
			if err != nil {
				return
			}
		}
	}()

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var alive <-chan time.Time
	var held []string // console lines kept back until the guest is alive
	if liveness > 0 {
		t := time.NewTimer(liveness)
		defer t.Stop()
		alive = t.C
	}
	noLife := false
	done := ctx.Done()
	kill := func() { _ = cmd.Process.Kill() }
	emit := func(s string) {
		fmt.Fprintln(out, s)
	}
	for lines != nil {
		select {
		case s, ok := <-lines:
			if !ok {
				lines = nil
				break
			}
			b.Tail = append(b.Tail, s)
			if len(b.Tail) > tailLines {
				b.Tail = b.Tail[1:]
			}
			m, isMarker := b.Console.Line(s)
			if isMarker {
				switch m.Verb {
				case VerbInit:
					b.Init = time.Now()
				case VerbModules:
					b.Modules = time.Now()
				case VerbDone:
					b.Done = time.Now()
				}
			}
			if alive != nil && !b.Console.Init {
				held = append(held, s)
				continue
			}
			alive = nil
			for _, h := range held {
				emit(h)
			}
			held = nil
			emit(s)
		case <-alive:
			alive = nil
			noLife = true
			kill()
		case <-deadline.C:
			b.TimedOut = true
			kill()
		case <-done:
			done = nil
			kill()
		}
	}
	b.QEMUErr = cmd.Wait()
	b.Exit = time.Now()
	if noLife || liveness > 0 && !b.Console.Init && ctx.Err() == nil {
		// Killed at the liveness deadline, or qemu gave up by itself
		// (KVM may abort on an MSR it cannot set) before the init ran.
		return b, &noLifeError{qemu: b.QEMUErr}
	}
	for _, h := range held {
		emit(h)
	}
	if err := ctx.Err(); err != nil {
		return b, fmt.Errorf("vmtest: %w", err)
	}
	return b, nil
}

// kvmVerdictFile remembers, per host boot, that KVM failed a guest, so that
// later runs go straight to TCG instead of waiting for the liveness
// deadline again.
func kvmVerdictFile(cache string) string { return filepath.Join(cache, "kvm-unusable") }

func hostBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func kvmKnownBad(cache string) bool {
	id := hostBootID()
	b, err := os.ReadFile(kvmVerdictFile(cache))
	return err == nil && id != "" && strings.TrimSpace(string(b)) == id
}

func rememberKVMBad(cache string) error {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return err
	}
	return os.WriteFile(kvmVerdictFile(cache), []byte(hostBootID()+"\n"), 0o644)
}
