package redistest

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	clusterSlots       = 16384
	clusterTimeout     = 20 * time.Second // from creation until every node reports cluster_state:ok
	clusterCLITimeout  = 30 * time.Second // for redis-cli --cluster create itself
	clusterNodeTimeout = "2000"           // ms; short, so tests that kill a node see it fail over soon
)

// Cluster is a Redis Cluster of masters without replicas, each a Server
// started by StartCluster.
type Cluster struct {
	// Nodes are the masters, in creation order; redis-cli gives each an
	// equal share of the 16384 slots in that order.
	Nodes []*Server
	// Addrs are the Nodes' addresses, ready for redis.ClusterOptions.Addrs.
	Addrs []string
}

// StartCluster starts masters redis-server nodes in cluster mode on free
// loopback ports, joins them with `redis-cli --cluster create`, and returns
// once every node reports cluster_state:ok with all slots assigned and
// knows all the others. masters must be at least 3, as redis-cli requires.
// Its error wraps ErrNotInstalled when redis-server or redis-cli is missing.
// The caller must call Stop.
func StartCluster(masters int) (*Cluster, error) {
	if masters < 3 {
		return nil, fmt.Errorf("redistest: a cluster needs at least 3 masters, not %d", masters)
	}
	cli, err := lookPath("redis-cli")
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	for range masters {
		s, err := Start(Options{Args: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", clusterNodeTimeout,
			"--appendonly", "no",
		}})
		if err != nil {
			return nil, errors.Join(err, c.Stop())
		}
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), clusterCLITimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		err = fmt.Errorf("redistest: redis-cli --cluster create: %w\n%s", err, out)
		return nil, errors.Join(err, c.Stop())
	}
	if err := c.waitReady(); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return c, nil
}

// StartClusterT is StartCluster for tests: it registers Stop with
// t.Cleanup, skips the test when redis is missing (fails it if Required),
// and fails the test when the cluster does not come up.
func StartClusterT(t testing.TB, masters int) *Cluster {
	t.Helper()
	c, err := StartCluster(masters)
	if err != nil {
		skipOrFatal(t, err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("redistest: stop cluster: %v", err)
		}
	})
	return c
}

// Stop stops every node (see Server.Stop) and returns their errors joined.
// It is idempotent.
func (c *Cluster) Stop() error {
	var errs []error
	for _, s := range c.Nodes {
		errs = append(errs, s.Stop())
	}
	return errors.Join(errs...)
}

// waitReady polls CLUSTER INFO on every node until each reports the cluster
// ok, all slots assigned and all nodes known, or clusterTimeout passes.
func (c *Cluster) waitReady() error {
	deadline := time.Now().Add(clusterTimeout)
	for {
		err := c.ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: cluster not ready within %v: %w", clusterTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready returns nil when every node's CLUSTER INFO shows a healthy cluster
// of len(c.Nodes) masters, or the first discrepancy.
func (c *Cluster) ready() error {
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_assigned": strconv.Itoa(clusterSlots),
		"cluster_slots_ok":       strconv.Itoa(clusterSlots),
		"cluster_known_nodes":    strconv.Itoa(len(c.Nodes)),
		"cluster_size":           strconv.Itoa(len(c.Nodes)),
	}
	for _, addr := range c.Addrs {
		info, err := do(addr, "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: CLUSTER INFO: %w", addr, err)
		}
		got := parseInfo(info)
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("%s: %s is %q, want %q", addr, k, got[k], v)
			}
		}
	}
	return nil
}

// parseInfo splits an INFO-style reply ("key:value" lines) into a map.
func parseInfo(info string) map[string]string {
	m := make(map[string]string)
	for line := range strings.SplitSeq(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			m[k] = v
		}
	}
	return m
}
