package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Redraw intervals of a meter: a terminal gets a live bar, a log file a
// line now and then.
const (
	ttyEvery   = 200 * time.Millisecond
	plainEvery = 2 * time.Second
)

// meter shows the progress of a copy on w (stderr) while it runs: a bar
// redrawn in place when w is a terminal, else a plain line every
// plainEvery. It reads the count from an atomic counter that the copy
// advances, so it costs the copy nothing and Redis nothing.
type meter struct {
	w     io.Writer
	tty   bool
	label string
	total int64         // expected bytes, 0 if unknown
	base  int64         // bytes present before this copy (a resumed download)
	n     *atomic.Int64 // bytes copied by this copy
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

// startMeter starts drawing; Stop ends it. A nil meter (from a quiet
// command) does nothing.
func startMeter(w io.Writer, label string, total, base int64, n *atomic.Int64) *meter {
	m := &meter{w: w, tty: isTerminal(w), label: label, total: total, base: base, n: n,
		start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	every := plainEvery
	if m.tty {
		every = ttyEvery
	}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				if m.tty {
					fmt.Fprint(m.w, "\r\x1b[K") // leave the line to the summary
				}
				return
			case <-t.C:
				m.draw()
			}
		}
	}()
	return m
}

// Stop stops the meter and waits for its goroutine.
func (m *meter) Stop() {
	if m == nil {
		return
	}
	close(m.stop)
	<-m.done
}

func (m *meter) draw() {
	io.WriteString(m.w, m.line(m.n.Load(), time.Since(m.start)))
}

// line is the progress after copying copied bytes in elapsed: on a
// terminal a bar that overwrites the previous one,
//
//	export 0b7c1e2f [=========>              ]  40% 1.9 MiB of 4.8 MiB  2.4 MiB/s  2s left
//
// elsewhere a line of its own:
//
//	export 0b7c1e2f: 1.9 MiB of 4.8 MiB (40%), 2.4 MiB/s, 2s left
func (m *meter) line(copied int64, elapsed time.Duration) string {
	have := m.base + copied
	frac := 0.0
	if m.total > 0 {
		frac = min(float64(have)/float64(m.total), 1)
	}
	left := ""
	if m.total > have && copied > 0 {
		d := time.Duration(float64(m.total-have) / float64(copied) * float64(elapsed)).Round(time.Second)
		if d > 0 {
			left = formatDuration(d) + " left"
		}
	}
	var b strings.Builder
	if m.tty {
		b.WriteString("\r" + m.label)
		if m.total > 0 {
			const width = 24
			full := int(frac * width)
			b.WriteString(" [" + strings.Repeat("=", full))
			if full < width {
				b.WriteString(">" + strings.Repeat(" ", width-full-1))
			}
			fmt.Fprintf(&b, "] %3.0f%% %s of %s", 100*frac, formatBytes(have), formatBytes(m.total))
		} else {
			fmt.Fprintf(&b, " %s", formatBytes(have))
		}
		fmt.Fprintf(&b, "  %s", formatRate(copied, elapsed))
		if left != "" {
			b.WriteString("  " + left)
		}
		b.WriteString("\x1b[K")
		return b.String()
	}
	fmt.Fprintf(&b, "%s: %s", m.label, formatBytes(have))
	if m.total > 0 {
		fmt.Fprintf(&b, " of %s (%.0f%%)", formatBytes(m.total), 100*frac)
	}
	fmt.Fprintf(&b, ", %s", formatRate(copied, elapsed))
	if left != "" {
		b.WriteString(", " + left)
	}
	return b.String() + "\n"
}

// isTerminal reports whether w is a terminal that understands "\r" and
// "erase line" (not TERM=dumb).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	return fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// countingReader counts what its reader delivers and passes Close on, so
// that StartExport, which closes an io.Closer source when the export ends,
// still closes the file or pipe underneath.
type countingReader struct {
	io.ReadCloser
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// countingWriter counts what is written through it.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
