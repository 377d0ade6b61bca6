package dataset

import (
	"bytes"
	"encoding/csv"
	"io"
	"strconv"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"
)

func TestDatasetSize(t *testing.T) {
	t.Parallel()
	// Around the digit boundaries of the id and the period of the names.
	for _, rows := range []int64{1, 2, 9, 10, 11, 99, 100, 101, 255, 256, 257, 511, 512, 999, 1000, 1001, 9999, 10_000, 12_345, 100_001} {
		t.Run(strconv.FormatInt(rows, 10), func(t *testing.T) {
			t.Parallel()
			d := New(rows, 0)
			got, err := io.ReadAll(d)
			require.NoError(t, err)
			require.Equal(t, Size(rows), int64(len(got)), "datasetSize against the bytes read")
			require.Equal(t, int64(len(got)), d.Size())
			require.EqualValues(t, rows+1, bytes.Count(got, []byte("\n")))
		})
	}
}

// TestDatasetSizeLarge checks the closed form against a sum over every row
// for a dataset of ten million rows, more than the service accepts,
// without making its bytes.
func TestDatasetSizeLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("sums 10 million rows")
	}
	t.Parallel()
	const rows = 10_000_000
	sum := int64(len(Header))
	for i := int64(1); i <= rows; i++ {
		sum += rowFixed + rowVariable(i)
	}
	require.Equal(t, sum, Size(rows))
	// Row lengths really are rowFixed plus the variable parts, at the ends.
	for _, i := range []int64{1, 9, 10, 257, 999_999, 1_000_000, rows} {
		require.Equal(t, rowFixed+rowVariable(i), int64(len(AppendRow(nil, i))), "row %d", i)
	}
}

func TestDatasetContent(t *testing.T) {
	t.Parallel()
	const rows = 1000
	a, err := io.ReadAll(New(rows, 0))
	require.NoError(t, err)
	// Any read pattern gives the same bytes: one byte at a time, and
	// half-reads (iotest.HalfReader) too.
	b, err := io.ReadAll(iotest.OneByteReader(New(rows, 0)))
	require.NoError(t, err)
	require.Equal(t, a, b)
	c, err := io.ReadAll(iotest.HalfReader(New(rows, 0)))
	require.NoError(t, err)
	require.Equal(t, a, c)
	require.NoError(t, iotest.TestReader(New(rows, 0), a))
	require.Equal(t, a, Bytes(rows), "Bytes is what a Reader reads")

	// It is CSV with the promised header and rows numbered 1 to rows.
	records, err := csv.NewReader(bytes.NewReader(a)).ReadAll()
	require.NoError(t, err)
	require.Len(t, records, rows+1)
	require.Equal(t, []string{"id", "name", "email", "amount", "created_at"}, records[0])
	require.Equal(t, []string{"1", "Alan Lovelace", "alan.lovelace1@example.com", "1079.19", "2025-01-01T00:00:37Z"}, records[1])
	for i, rec := range records[1:] {
		require.Equal(t, strconv.Itoa(i+1), rec[0])
		_, err := time.Parse(time.RFC3339, rec[4])
		require.NoError(t, err)
		amount, err := strconv.ParseFloat(rec[3], 64)
		require.NoError(t, err)
		require.True(t, amount >= 1000 && amount < 10000, "amount %v", amount)
	}
}

func TestDatasetPacing(t *testing.T) {
	t.Parallel()
	// 30 rows at 200 rows a second take at least 29 intervals of 5 ms:
	// the first row is due at once. (Only the lower bound is certain.)
	const rows, rate = 30, 200
	d := New(rows, rate)
	start := time.Now()
	got, err := io.ReadAll(d)
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(start), (rows-1)*time.Second/rate)
	want, err := io.ReadAll(New(rows, 0))
	require.NoError(t, err)
	require.Equal(t, want, got, "pacing does not change the bytes")
}

func TestDatasetPacedReadReturnsWhatIsDue(t *testing.T) {
	t.Parallel()
	d := New(10, 1)
	d.perRow = time.Hour // after row 1, nothing is due for an hour
	buf := make([]byte, 1<<10)
	n, err := d.Read(buf)
	require.NoError(t, err)
	require.Equal(t, Header+string(AppendRow(nil, 1)), string(buf[:n]),
		"the first Read returns the header and the first row without waiting for the second")
}

func TestDatasetCloseStopsBlockedRead(t *testing.T) {
	t.Parallel()
	d := New(10, 1)
	d.perRow = time.Hour
	buf := make([]byte, 1<<10)
	_, err := d.Read(buf) // the header and row 1; row 2 is an hour away
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := d.Read(buf) // waits for row 2
		done <- err
	}()
	// Close a little later, so that the Read is (almost certainly) waiting
	// by then; a Read that begins after Close fails the same way.
	closer := time.AfterFunc(20*time.Millisecond, func() { d.Close() })
	defer closer.Stop()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop a Read waiting for its next row")
	}
	require.NoError(t, d.Close(), "Close is idempotent")
	require.NoError(t, d.Close())
	_, err = d.Read(buf)
	require.ErrorIs(t, err, ErrClosed)
}

func TestDatasetClosedBeforeRead(t *testing.T) {
	t.Parallel()
	d := New(10, 0)
	require.NoError(t, d.Close())
	_, err := d.Read(make([]byte, 10))
	require.ErrorIs(t, err, ErrClosed)
}

// TestDatasetAt: a dataset started at any offset reads exactly the bytes
// of the whole dataset from there, as a resumed durable export must.
func TestDatasetAt(t *testing.T) {
	t.Parallel()
	const rows = 3000
	whole := Bytes(rows)
	offsets := []int64{0, 1, int64(len(Header)) - 1, int64(len(Header)), int64(len(Header)) + 1,
		Size(1), Size(1) + 7, Size(1234), Size(1234) - 1, int64(len(whole)) - 1, int64(len(whole))}
	for i := int64(0); i < 50; i++ {
		offsets = append(offsets, i*int64(len(whole))/50+i)
	}
	for _, off := range offsets {
		got, err := io.ReadAll(NewAt(rows, 0, off))
		require.NoError(t, err)
		require.Equal(t, whole[off:], got, "from offset %d", off)
	}
}
