package exporter

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReasonCodes: every way an export ends here gets its code, and
// Job.Err maps the code back to its sentinel whatever the text says, so
// rewording a sentinel changes no stored record's meaning.
func TestReasonCodes(t *testing.T) {
	for _, tt := range []struct {
		cause error
		code  string
	}{
		{ErrCancelled, CodeCancelled},
		{fmt.Errorf("%w: during a cancel", ErrClosed), CodeShutdown},
		{ErrWorkerLost, CodeWorkerLost},
		{fmt.Errorf("%w: more than MaxBytes (9 bytes)", ErrTooLarge), CodeTooLarge},
		{fmt.Errorf("%w: 0 of 3 replicas", ErrNotReplicated), CodeNotReplicated},
		{fmt.Errorf("%w: chunks gone", ErrCorrupt), CodeCorrupt},
		{&sourceError{io.ErrUnexpectedEOF}, CodeSource},
		{&sourceError{fmt.Errorf("%w: a reader said so", ErrTooLarge)}, CodeTooLarge},
		{errors.New("OOM command not allowed"), CodeStore},
	} {
		require.Equal(t, tt.code, codeOf(tt.cause), "%v", tt.cause)
		job := &Job{Status: StatusFailed, Error: "reworded: " + tt.cause.Error(), ErrorCode: tt.code}
		err := job.Err()
		require.Equal(t, job.Error, err.Error())
		for _, c := range codeSentinels {
			require.Equal(t, c.code == tt.code, errors.Is(err, c.sentinel), "code %s, sentinel %v", tt.code, c.sentinel)
		}
	}
	// A code this version does not know (written by a newer one) keeps
	// its text and matches no sentinel.
	err := (&Job{Status: StatusFailed, Error: "quota exceeded", ErrorCode: "quota"}).Err()
	require.EqualError(t, err, "quota exceeded")
	for _, c := range codeSentinels {
		require.NotErrorIs(t, err, c.sentinel)
	}
	require.NoError(t, (&Job{Status: StatusCompleted, Error: "x", ErrorCode: CodeStore}).Err())
}

// TestLegacyRecordsDecode: jobs recorded before codes were stored (the
// error text began with the sentinel's prefixed text, and there was no
// code field) still map to their sentinels when read from the store.
func TestLegacyRecordsDecode(t *testing.T) {
	legacy := map[string]error{
		"exporter: worker lost":                              ErrWorkerLost,
		"exporter: export too large: more than MaxBytes (1)": ErrTooLarge,
		"exporter: export cancelled":                         ErrCancelled,
		"exporter: exporter shut down":                       ErrClosed,
		"exporter: not replicated: 0 of 1 replicas":          ErrNotReplicated,
		"exporter: export data corrupt: write x: 0 of its 3": ErrCorrupt,
		"read tcp 127.0.0.1:5432: connection reset by peer":  nil,
	}
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := testCtx(t)
		for text, want := range legacy {
			job, _ := newStoreJob(t, e, time.Minute)
			meta := e.store.keys(job.ID)[0]
			// What the version before codes wrote when it failed a job.
			require.NoError(t, e.client.HSet(ctx, meta, fStatus, "failed", fError, text).Err())
			require.NoError(t, e.client.HDel(ctx, meta, fCode).Err())
			got, err := e.store.Get(ctx, job.ID, "")
			require.NoError(t, err)
			require.Empty(t, got.ErrorCode)
			require.Equal(t, text, got.Error)
			if want == nil {
				require.EqualError(t, got.Err(), text)
				for _, c := range codeSentinels {
					require.NotErrorIs(t, got.Err(), c.sentinel)
				}
				continue
			}
			require.ErrorIs(t, got.Err(), want, text)
		}
	})
}
