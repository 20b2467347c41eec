//go:build linux

// Command vminit is the init (PID 1) of the VM test tier's guest. The host
// (internal/vmtest, run by cmd/vmtest) builds it statically and puts it at
// /init of the initramfs with a config at /lbkit/config.json.
//
// It mounts proc, sysfs, devtmpfs and tmpfs on /run and /tmp, brings up lo,
// loads the listed kernel modules with finit_module in order, runs every
// test binary in turn, reports each step on the console with marker lines
// (see vmtest.FormatMarker), and powers the guest off. It refuses to run
// as anything but PID 1 with its config present, so that starting it on a
// host by mistake changes nothing.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/lbkit/lbkit/internal/vmtest"
	"golang.org/x/sys/unix"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "vminit: refusing to run: not PID 1 (this is the test VM's init, not a tool)")
		os.Exit(2)
	}
	cfg, err := readConfig()
	if err != nil {
		fmt.Printf("vminit: %v\n", err)
		powerOff()
	}
	report := func(verb string, kv ...string) {
		// A leading newline ends a partial line a test left behind.
		fmt.Printf("\n%s\n", vmtest.FormatMarker(cfg.Nonce, verb, kv...))
	}

	for _, err := range setup() {
		fmt.Printf("vminit: setup: %v\n", err)
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	report(vmtest.VerbInit, "kernel", unix.ByteSliceToString(uts.Release[:]), "uptime", uptime())

	start := time.Now()
	loaded, failed := 0, 0
	for _, m := range cfg.Modules {
		if err := loadModule(m.Path); err != nil {
			failed++
			report(vmtest.VerbModule, "name", m.Name, "status", "FAIL", "err", err.Error())
			continue
		}
		loaded++
	}
	report(vmtest.VerbModules, "loaded", fmt.Sprint(loaded), "failed", fmt.Sprint(failed), "elapsed", time.Since(start).Round(time.Millisecond).String())

	bad := 0
	for _, t := range cfg.Tests {
		report(vmtest.VerbStart, "pkg", t.Package)
		start := time.Now()
		cmd := exec.Command(t.Binary, t.Args...)
		cmd.Dir = t.Dir
		cmd.Env = cfg.Env
		cmd.Stdout = os.Stdout
		cmd.Stderr = os.Stdout // one stream keeps the console in order
		err := cmd.Run()
		status := vmtest.ExitStatus(cmd.ProcessState)
		if err != nil && cmd.ProcessState == nil {
			fmt.Printf("vminit: %s: %v\n", t.Binary, err)
		}
		if status != 0 {
			bad++
		}
		report(vmtest.VerbExit, "pkg", t.Package, "status", fmt.Sprint(status), "elapsed", time.Since(start).Round(time.Millisecond).String())
	}
	report(vmtest.VerbDone, "failed", fmt.Sprint(bad))
	powerOff()
}

func readConfig() (*vmtest.GuestConfig, error) {
	data, err := os.ReadFile(vmtest.GuestConfigPath)
	if err != nil {
		return nil, err
	}
	var cfg vmtest.GuestConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", vmtest.GuestConfigPath, err)
	}
	return &cfg, nil
}

// setup mounts the pseudo file systems and brings up lo.
func setup() []error {
	var errs []error
	for _, m := range []struct{ fs, dir string }{
		{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}, {"tmpfs", "/run"}, {"tmpfs", "/tmp"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.Mount(m.fs, m.dir, m.fs, unix.MS_NOSUID, ""); err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fs, m.dir, err))
		}
	}
	if err := linkUp("lo"); err != nil {
		errs = append(errs, fmt.Errorf("bring up lo: %w", err))
	}
	return errs
}

func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// loadModule loads one module file; a module that is already there counts
// as loaded.
func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("finit_module %s: %w", path, err)
	}
	return nil
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "unknown"
	}
	up, _, _ := strings.Cut(string(b), " ")
	return up
}

// powerOff drains the console, then turns the guest off; qemu exits.
func powerOff() {
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1) // tcdrain: let the serial port send everything
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	fmt.Printf("vminit: power off: %v\n", err)
	// Exiting makes the kernel panic, and panic=-1 with -no-reboot ends qemu.
	os.Exit(1)
}
