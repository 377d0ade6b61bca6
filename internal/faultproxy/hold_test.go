package faultproxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCommandSplitter feeds a pipeline in every split into two reads, and
// byte by byte, and checks that the parts put back together are the
// stream, each command named on its first part and ended on its last.
func TestCommandSplitter(t *testing.T) {
	big := strings.Repeat("x", 300)
	cmds := [][]byte{
		[]byte("*1\r\n$5\r\nMULTI\r\n"),
		[]byte("*4\r\n$6\r\nRPUSHX\r\n$1\r\nk\r\n$300\r\n" + big + "\r\n$6\r\n\r\n$3\r\n\r\n"),
		[]byte("*4\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$1\r\nk\r\n"),
		[]byte("*1\r\n$4\r\nEXEC\r\n"),
	}
	stream := bytes.Join(cmds, nil)
	check := func(t *testing.T, reads [][]byte) {
		t.Helper()
		var (
			c     commandSplitter
			got   [][]byte
			names []string
			cur   []byte
			open  bool
		)
		for _, r := range reads {
			c.split(r, func(seg []byte, name string, first, last bool) {
				require.NotEmpty(t, name, "a part without its command's name")
				if first {
					require.False(t, open, "a command began before the last ended")
					open, cur = true, nil
					names = append(names, name)
				}
				require.True(t, open, "a part outside a command")
				cur = append(cur, seg...)
				if last {
					open = false
					got = append(got, cur)
				}
			})
		}
		require.False(t, open)
		require.Equal(t, []string{"MULTI", "RPUSHX", "EVALSHA", "EXEC"}, names)
		require.Equal(t, cmds, got)
	}
	for i := 0; i <= len(stream); i++ {
		check(t, [][]byte{stream[:i], stream[i:]})
	}
	bytewise := make([][]byte, len(stream))
	for i := range stream {
		bytewise[i] = stream[i : i+1]
	}
	check(t, bytewise)
}

// TestCommandSplitterNotRESP passes bytes that are not RESP through as
// they came, unnamed.
func TestCommandSplitterNotRESP(t *testing.T) {
	for _, in := range []string{"hello", "PING\r\n", "*x\r\n", "*1\r\n+OK\r\n"} {
		var (
			c   commandSplitter
			out []byte
		)
		c.split([]byte(in), func(seg []byte, name string, first, last bool) { out = append(out, seg...) })
		c.split([]byte("more"), func(seg []byte, name string, first, last bool) { out = append(out, seg...) })
		require.Equal(t, in+"more", string(out), "input %q", in)
	}
}
