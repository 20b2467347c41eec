package nftables

import (
	"context"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// countingDumper counts the requests of each message type it passes on.
type countingDumper struct {
	d Dumper
	n map[netlink.HeaderType]int
}

func (c *countingDumper) Execute(m netlink.Message) ([]netlink.Message, error) {
	c.n[m.Header.Type]++
	return c.d.Execute(m)
}

// TestKernelApplyReadsOnlyDefinitions: an engine that knows nothing of
// the table reads the chain and set definitions before its first Apply,
// and no elements (it does not use them; at 10k maps they are most of the
// table).
func TestKernelApplyReadsOnlyDefinitions(t *testing.T) {
	_, h := kernelHost(t)
	ctx := context.Background()
	if err := dialIn(t, h, testTable).Apply(ctx, Full(sampleRuleset())); err != nil {
		t.Fatal(err)
	}
	b, _, err := dialBatcher(h.NamespaceFd())
	if err != nil {
		t.Fatal(err)
	}
	defer closeBatcher(b)
	dc, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: h.NamespaceFd()})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	d := &countingDumper{d: dc, n: map[netlink.HeaderType]int{}}
	e, err := New(testTable, b, d)
	if err != nil {
		t.Fatal(err)
	}
	tx := &Transaction{}
	tx.AddElements("eps4", MapElem([]Value{Int(9)}, Addr(a("192.0.2.29")), Port(80)))
	if err := e.Apply(ctx, tx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(listTable(t, h, testTable), "9 : 192.0.2.29 . 80") {
		t.Errorf("the element is not in the table:\n%s", listTable(t, h, testTable))
	}
	if d.n[nftMsgType(unix.NFT_MSG_GETSET)] == 0 || d.n[nftMsgType(unix.NFT_MSG_GETCHAIN)] == 0 {
		t.Errorf("definitions not read: %v", d.n)
	}
	if n := d.n[nftMsgType(unix.NFT_MSG_GETSETELEM)]; n != 0 {
		t.Errorf("reading the definitions dumped the elements of %d sets", n)
	}
	if n := d.n[nftMsgType(unix.NFT_MSG_GETRULE)]; n != 0 {
		t.Errorf("reading the definitions dumped the rules %d times", n)
	}
}
