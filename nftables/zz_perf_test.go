package nftables

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"
)

func TestKernelColdProbe(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PROBE_N"))
	if n == 0 {
		t.Skip("PROBE_N")
	}
	_, h := kernelHost(t)
	e := dialIn(t, h, scaleTable)
	shards, _ := strconv.Atoi(os.Getenv("PROBE_SHARDS"))
	if shards == 0 {
		shards = scaleShards
	}
	rs := shardedRuleset(n, 10, shards)
	if os.Getenv("PROBE_KP") != "" {
		rs = kubeProxyRuleset(n, 10)
	}
	start := time.Now()
	if err := e.Apply(context.Background(), Full(rs)); err != nil {
		t.Fatal(err)
	}
	st := e.LastStats()
	t.Logf("n=%d: %v (%d msgs) commit %v", n, time.Since(start), st.Messages, st.Commit)
}
