// Package nettest is lbkit's tier-2 test harness: it builds small networks of
// Linux network namespaces on the running kernel, runs code and commands
// inside them, and sends real traffic through them.
//
// A test describes a Topology — named hosts attached to one or more L2
// segments — and New builds it:
//
//	lab := nettest.New(t, nettest.Topology{
//		Hosts: []nettest.HostSpec{{Name: "client"}, {Name: "lb"}, {Name: "be1"}},
//	})
//
// Every segment is a Linux bridge inside a namespace of its own (the
// "switch"); every host is a namespace joined to each of its segments by a
// veth pair. Host number i (1-based, in the order of Topology.Hosts) gets
// address .i of every segment it is on: on the default segment "lan" that is
// 192.0.2.i/24 and 2001:db8::i/64. Extra segments (a router between client
// and balancer, say) take their prefixes from the other documentation ranges.
//
// Host.Do runs a function inside a host's namespace with the OS thread locked
// and the thread's namespace restored afterwards; a thread whose namespace
// cannot be restored is never handed back to the Go scheduler. Sockets made
// inside Do stay in that namespace, so a listener or a connection may be used
// from any goroutine afterwards. Host.Run executes a command inside the
// namespace. StartEcho starts TCP and UDP servers that answer with the host's
// name and the source address they saw; Host.Count makes N connections and
// counts the answers per backend, the basis of every distribution test, and
// ChiSquare judges such counts.
//
// Safety: the harness never touches the root network namespace. Namespaces
// are created with unshare(CLONE_NEWNET) and bind-mounted under /run/netns
// with names of the form "lbk-<pid>-<seq>-<name>"; veth pairs are created
// inside the switch namespace with their peer placed straight into the host
// namespace, so no link ever appears in the root namespace. Everything is
// removed through t.Cleanup, also when a test fails or panics, and New first
// removes namespaces left behind by a test process that no longer runs.
//
// RequireKernel guards every test that needs root and the kernel: it skips
// with the reason when the test cannot run, and fails instead when the
// environment sets LBKIT_REQUIRE_KERNEL=1, as CI does, so that a CI run which
// silently skipped the kernel cannot be green.
package nettest
