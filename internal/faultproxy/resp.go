package faultproxy

import (
	"bytes"
	"strconv"
	"strings"
)

// commandSplitter cuts what a Redis client sends (RESP arrays of bulk
// strings, one per command) into parts of commands, and names each
// command as soon as its first element is in. It holds back only the
// start of a command, until its name is known; the rest streams through.
// Bytes it cannot parse pass through unnamed, as one unending command.
type commandSplitter struct {
	raw   bool   // not RESP: pass everything through
	head  []byte // the current command's bytes, while its name is unknown
	name  string // the current command's name, once known
	line  []byte // a header line ("*3" or "$6") read in part
	open  bool   // a command's header was read, and not all of its elements
	elems int    // elements of the current command not yet begun
	body  int    // bytes of the current element (with its CRLF) not yet read
	first bool   // the current element is the command's first (its name)
}

// split passes every byte of b to out, in order, as parts of commands:
// first is set on a command's first part (named), last on its last.
func (c *commandSplitter) split(b []byte, out func(seg []byte, name string, first, last bool)) {
	if c.raw {
		out(b, "", false, false)
		return
	}
	start := 0 // of the part of b not yet passed on
	flush := func(end int, last bool) {
		if c.name == "" {
			c.head = append(c.head, b[start:end]...)
		} else if end > start || last {
			out(b[start:end], c.name, false, last)
		}
		start = end
	}
	for i := 0; i < len(b); {
		switch {
		case c.body > 0:
			n := min(c.body, len(b)-i)
			if c.first && c.name == "" {
				c.line = append(c.line, b[i:i+n]...) // the name's bytes
			}
			c.body -= n
			i += n
			if c.body > 0 {
				continue
			}
			if c.first {
				c.first = false
				c.head = append(c.head, b[start:i]...)
				start = i
				c.name = strings.ToUpper(string(bytes.TrimSuffix(c.line, []byte("\r\n"))))
				c.line = nil
				out(c.head, c.name, true, c.elems == 0)
				c.head = nil
				if c.elems == 0 {
					c.name, c.open = "", false
				}
				continue
			}
			if c.elems == 0 {
				flush(i, true)
				c.name, c.open = "", false
			}
		default:
			if want := byte('$'); len(c.line) == 0 {
				if !c.open {
					want = '*'
				}
				if b[i] != want {
					c.fail(b, start, out)
					return
				}
			}
			nl := bytes.IndexByte(b[i:], '\n')
			if nl < 0 {
				c.line = append(c.line, b[i:]...)
				i = len(b)
				continue
			}
			line := append(c.line, b[i:i+nl+1]...)
			c.line = nil
			i += nl + 1
			n, err := strconv.Atoi(string(bytes.TrimSuffix(line[1:], []byte("\r\n"))))
			switch {
			case err != nil || n < 0:
				c.fail(b, start, out)
				return
			case !c.open && line[0] == '*':
				c.open, c.elems, c.first = true, n, true
			case c.open && c.elems > 0 && line[0] == '$':
				c.elems--
				c.body = n + 2
			default:
				c.fail(b, start, out)
				return
			}
		}
	}
	flush(len(b), false)
}

// fail gives up parsing: what is held back, and the rest of b, pass on.
func (c *commandSplitter) fail(b []byte, start int, out func([]byte, string, bool, bool)) {
	c.raw = true
	out(append(c.head, b[start:]...), "", false, false)
	c.head = nil
}
