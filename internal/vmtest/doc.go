// Package vmtest is lbkit's tier-3 test harness: it runs tests that need
// kernel features the host lacks (IPVS, IPIP tunnels) inside a qemu guest
// that boots Debian's own kernel with its modules.
//
// A VM test is an ordinary test in a _test.go file that starts with
//
//	//go:build vmtest
//
// and guards itself with RequireIPVS or RequireIPIP, which skip (or fail
// under LBKIT_REQUIRE_KERNEL=1) when the running kernel cannot do the job,
// so that the same test never passes vacuously on the host.
//
// Run (driven by the command internal/vmtest/cmd/vmtest, which `make
// vmtest` runs) does everything in one pass:
//
//   - DiscoverPackages finds the packages with vmtest-tagged test files
//     through `go list`, and BuildTestBinary compiles each into a static
//     binary (`go test -c -tags vmtest`, CGO_ENABLED=0);
//   - FetchKernel resolves linux-image-amd64 to the versioned image package
//     with apt-cache, downloads it with `apt-get download`, extracts it with
//     dpkg-deb, runs depmod on it, and keeps vmlinuz and the modules of
//     DefaultModules (with everything modules.dep and modules.softdep say
//     they need, in load order; see ModuleIndex) in a cache outside the
//     repository (DefaultCacheDir);
//   - WriteInitramfs writes a newc cpio archive (CPIOWriter) holding the
//     static init program (cmd/vminit), the modules, the test binaries and
//     their testdata;
//   - qemu-system-x86_64 boots it, with KVM when KVM works and TCG software
//     emulation otherwise. The init mounts proc, sysfs, devtmpfs and tmpfs,
//     brings up lo, loads the modules with finit_module, runs every test
//     binary with -test.v and reports on the serial console with marker
//     lines (FormatMarker) before it powers the guest off;
//   - the console is streamed to the caller, parsed by Console, and turned
//     into a Result: which binaries passed, and what went wrong otherwise —
//     a failed module, a failed binary, a guest that crashed or was killed
//     at the timeout (with the console's last lines).
//
// All VM tests run in one boot; on this project's machines (TCG, 2 cores)
// a boot to the result takes about 5 s.
package vmtest
