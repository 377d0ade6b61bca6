// Package dataset generates the CSV files the example service exports: a
// header row and rows numbered 1 to n whose content depends only on their
// number, so that the same request always gives the same bytes, the size
// is known before the first byte is made, and a reader can start at any
// byte offset (which is how a durable export resumes).
//
//	id,name,email,amount,created_at
//	1,Alan Lovelace,alan.lovelace1@example.com,1079.19,2025-01-01T00:00:37Z
//
// It is a package of its own so that the browser test (another module)
// can compare a download with the bytes the service's source produces.
package dataset

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Header is the first line of every dataset.
//
// Every field but id, name and email has a fixed width, and name and email
// repeat with a period of periodRows rows, so Size is a closed form.
const Header = "id,name,email,amount,created_at\n"

var (
	firstNames = [...]string{"Ada", "Alan", "Barbara", "Claude", "Donald", "Edsger", "Frances", "Grace",
		"Hedy", "John", "Ken", "Leslie", "Margaret", "Niklaus", "Radia", "Tim"}
	lastNames = [...]string{"Lovelace", "Turing", "Liskov", "Shannon", "Knuth", "Dijkstra", "Allen", "Hopper",
		"Lamarr", "Backus", "Thompson", "Lamport", "Hamilton", "Wirth", "Perlman", "Berners-Lee"}
	lowerFirst, lowerLast [len(firstNames)]string
)

const periodRows = len(firstNames) * len(lastNames)

// createdBase is created_at of row 0; row i was created 37*i seconds later.
var createdBase = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

var (
	// rowFixed is the length of a row without its variable parts
	// (rowVariable); periodSum is the sum of nameLen over one period.
	rowFixed  int64
	periodSum int64
)

func init() {
	for i := range firstNames {
		lowerFirst[i] = strings.ToLower(firstNames[i])
		lowerLast[i] = strings.ToLower(lastNames[i])
	}
	rowFixed = int64(len(AppendRow(nil, 1))) - rowVariable(1)
	for i := range periodRows {
		periodSum += nameLen(int64(i))
	}
}

func names(i int64) (first, last int) {
	return int(i % int64(len(firstNames))), int(i / int64(len(firstNames)) % int64(len(lastNames)))
}

// AppendRow appends row i, newline included, to b.
func AppendRow(b []byte, i int64) []byte {
	f, l := names(i)
	b = strconv.AppendInt(b, i, 10)
	b = append(b, ',')
	b = append(b, firstNames[f]...)
	b = append(b, ' ')
	b = append(b, lastNames[l]...)
	b = append(b, ',')
	b = append(b, lowerFirst[f]...)
	b = append(b, '.')
	b = append(b, lowerLast[l]...)
	b = strconv.AppendInt(b, i, 10)
	b = append(b, "@example.com,"...)
	// An amount from 1000.00 to 9999.99: always 7 bytes.
	cents := 100_000 + i*7919%900_000
	b = strconv.AppendInt(b, cents/100, 10)
	b = append(b, '.', byte('0'+cents/10%10), byte('0'+cents%10))
	b = append(b, ',')
	b = time.Unix(createdBase+37*i, 0).UTC().AppendFormat(b, time.RFC3339) // 20 bytes until year 9999
	return append(b, '\n')
}

// nameLen is the length of the first and last name of row i, which occur
// twice in it (name and email).
func nameLen(i int64) int64 {
	f, l := names(i)
	return int64(len(firstNames[f]) + len(lastNames[l]))
}

// rowVariable is the length of the variable parts of row i: its number and
// names, twice each.
func rowVariable(i int64) int64 {
	return 2*int64(len(strconv.FormatInt(i, 10))) + 2*nameLen(i)
}

// Size returns the exact size in bytes of a dataset of rows rows.
func Size(rows int64) int64 {
	// Digits of 1..rows.
	var digits int64
	for d, lo := int64(1), int64(1); lo <= rows; d, lo = d+1, lo*10 {
		digits += d * (min(rows, lo*10-1) - lo + 1)
	}
	// Names of 0..rows, in whole periods and a rest, less row 0's.
	n := rows + 1
	namesSum := n / int64(periodRows) * periodSum
	for i := n / int64(periodRows) * int64(periodRows); i < n; i++ {
		namesSum += nameLen(i)
	}
	namesSum -= nameLen(0)
	return int64(len(Header)) + rows*rowFixed + 2*digits + 2*namesSum
}

// Bytes returns the whole dataset of rows rows, as a Reader from offset 0
// reads it.
func Bytes(rows int64) []byte {
	b := make([]byte, 0, Size(rows))
	b = append(b, Header...)
	for i := int64(1); i <= rows; i++ {
		b = AppendRow(b, i)
	}
	return b
}

// ErrClosed is returned by a Read after Close.
var ErrClosed = errors.New("dataset closed")

// pacingSlice is the least time a paced Read that has to wait waits: it
// then returns about that much time's worth of rows at once, so a fast
// rate costs at most about 1/pacingSlice wake-ups a second, not one per row.
const pacingSlice = 10 * time.Millisecond

// Reader reads a generated dataset, at most about a given number of rows a
// second when that rate is above 0. Its Read and Close may be called
// concurrently: Close makes a Read that waits for the next row return
// ErrClosed at once, which is how a cancel or a shutdown stops a slow
// export promptly. Read is for one goroutine at a time. Create one with
// New or NewAt.
type Reader struct {
	rows   int64
	perRow time.Duration // time between two rows; 0 is as fast as possible

	next   int64  // the next row to make; 0 while the header is unmade
	skip   int64  // bytes of the first row (or header) made not to return: it starts at an offset
	mem    []byte // rows made, reused once they are read
	unread []byte // the unread end of mem
	start  time.Time
	closed chan struct{}
	once   sync.Once
}

// New returns a Reader of a dataset of rows rows that makes about rate
// rows a second, or as many as it is asked for when rate is 0.
func New(rows int64, rate int) *Reader {
	d := &Reader{rows: rows, closed: make(chan struct{})}
	if rate > 0 {
		d.perRow = time.Second / time.Duration(rate)
		if d.perRow == 0 {
			d.perRow = 1 // above a billion rows a second: as good as unpaced
		}
	}
	return d
}

// NewAt returns the Reader of New from byte offset on: it makes the rows
// from the one offset falls in, as if it had been reading since the first
// at rate, and skips the bytes of that row before offset.
func NewAt(rows int64, rate int, offset int64) *Reader {
	d := New(rows, rate)
	if offset <= 0 {
		return d
	}
	// The rows before offset: the largest k with Size(k) <= offset.
	lo, hi := int64(0), rows
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if Size(mid) <= offset {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if lo == 0 && offset < int64(len(Header)) {
		d.skip = offset // inside the header
		return d
	}
	d.next, d.skip = lo+1, offset-Size(lo)
	d.start = time.Now().Add(-time.Duration(lo) * d.perRow) // row lo+1 is due now
	return d
}

// Size returns the dataset's size in bytes.
func (d *Reader) Size() int64 { return Size(d.rows) }

// Read implements io.Reader. It returns what is due, waiting only when
// nothing is.
func (d *Reader) Read(p []byte) (int, error) {
	select {
	case <-d.closed:
		return 0, ErrClosed
	default:
	}
	if d.next == 0 {
		d.mem = append(d.mem[:0], Header...)
		d.unread = d.mem
		d.next = 1
		d.start = time.Now()
	}
	n := 0
	for n < len(p) {
		if len(d.unread) == 0 {
			if d.next > d.rows {
				break
			}
			if wait := time.Until(d.due(d.next)); wait > 0 {
				if n > 0 {
					break // return what we have rather than wait
				}
				if err := d.sleep(max(wait, pacingSlice)); err != nil {
					return 0, err
				}
			}
			// Make the rows that are due now, up to about len(p)-n bytes.
			now := time.Now()
			d.mem = d.mem[:0]
			for d.next <= d.rows && len(d.mem) < len(p)-n && (d.perRow == 0 || !d.due(d.next).After(now)) {
				d.mem = AppendRow(d.mem, d.next)
				d.next++
			}
			d.unread = d.mem
		}
		if d.skip > 0 { // a dataset that starts at an offset
			k := min(d.skip, int64(len(d.unread)))
			d.unread, d.skip = d.unread[k:], d.skip-k
			continue
		}
		m := copy(p[n:], d.unread)
		n += m
		d.unread = d.unread[m:]
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// due returns when row i may be made.
func (d *Reader) due(i int64) time.Time {
	return d.start.Add(time.Duration(i-1) * d.perRow)
}

// sleep waits for d, or until Close.
func (d *Reader) sleep(wait time.Duration) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-d.closed:
		return ErrClosed
	case <-t.C:
		return nil
	}
}

// Close implements io.Closer. It is safe to call more than once and
// concurrently with Read.
func (d *Reader) Close() error {
	d.once.Do(func() { close(d.closed) })
	return nil
}
