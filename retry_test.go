package exporter

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// replyError is an error reply of a Redis server, as go-redis returns it
// (a redis.Error).
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// TestTransient: which store errors the Exporter repeats (writes) or
// waits out (WaitExport, WatchExport), and which it reports at once.
func TestTransient(t *testing.T) {
	x := &Exporter{store: NewRedisStore(nil)} // what the Exporter repeats on a RedisStore
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("connection refused")}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connection closed", io.EOF, true},
		{"dial refused", fmt.Errorf("write x: %w", dial), true},
		{"server loading", replyError("LOADING Redis is loading the dataset in memory"), true},
		{"replica after failover", fmt.Errorf("write x: %w", replyError("READONLY You can't write against a read only replica.")), true},
		{"master down", replyError("MASTERDOWN Link with MASTER is down"), true},
		{"cluster down", replyError("CLUSTERDOWN The cluster is down"), true},
		{"busy script", replyError("BUSY Redis is busy running a script."), true},
		{"ACL refusal", replyError("NOPERM User u has no permissions to access the 'c' channel"), false},
		{"script error", replyError("ERR user_script:1: bad argument"), false},
		{"out of memory", replyError("OOM command not allowed when used memory > 'maxmemory'."), false},
		{"replica, Redis 6 script", replyError("ERR Error running script (call to f_1): @user_script:1: -READONLY You can't write against a read only replica."), true},
		{"client closed", fmt.Errorf("get: %w", redis.ErrClosed), false},
		{"lease lost", fmt.Errorf("write x: %w", ErrLeaseLost), false},
		{"not found", ErrNotFound, false},
		{"corrupt", ErrCorrupt, false},
		{"gap", errGap, false},
		{"caller gave up", context.Canceled, false},
		{"deadline", fmt.Errorf("get: %w", context.DeadlineExceeded), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, x.retryable(tt.err), "%v", tt.err)
		})
	}
}
