package exporter

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestJobJSONArgs: a durable export's args appear in a Job's JSON as the
// JSON value they hold, not base64; args that are no JSON value, or a JSON
// string, stay base64; each decodes back to the same args (JSON ones
// compacted), and the other fields keep their names.
func TestJobJSONArgs(t *testing.T) {
	for _, c := range []struct {
		args, field string // field: how "args" appears in the JSON
		back        string // the args decoded back
	}{
		{`{"month": "2026-11", "rows": [1, 2]}`, `{"month":"2026-11","rows":[1,2]}`, `{"month":"2026-11","rows":[1,2]}`},
		{`42`, `42`, `42`},
		{`[]`, `[]`, `[]`},
		{`"a string"`, `"ImEgc3RyaW5nIg=="`, `"a string"`},
		{"7 1024", `"NyAxMDI0"`, "7 1024"},
		{"\x00\xff", `"AP8="`, "\x00\xff"},
		{`{"broken": `, `"eyJicm9rZW4iOiA="`, `{"broken": `},
	} {
		j := &Job{ID: "6b1f0bd4-6e4f-4b3f-9a2c-1f2e3d4c5b6a", Owner: "alice", Status: StatusPending, Kind: "rows", Args: []byte(c.args)}
		b, err := json.Marshal(j)
		require.NoError(t, err)
		var fields map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(b, &fields))
		require.JSONEq(t, c.field, string(fields["args"]), "args %q", c.args)
		require.Equal(t, `"rows"`, string(fields["kind"]))
		require.Equal(t, `"alice"`, string(fields["owner"]))

		var back Job
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, c.back, string(back.Args), "args %q", c.args)
		back.Args, j.Args = nil, nil
		require.Equal(t, *j, back)
	}
	// No args: no field.
	b, err := json.Marshal(Job{ID: "x"})
	require.NoError(t, err)
	require.NotContains(t, string(b), `"args"`)
	var j Job
	require.NoError(t, json.Unmarshal([]byte(`{"id":"x","args":null}`), &j))
	require.Nil(t, j.Args)
}
