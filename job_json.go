package exporter

import (
	"bytes"
	"encoding/json"
)

// Job's JSON form: the fields' tags, except Args. A durable export's args
// are JSON nearly always (exporterhttp passes a request's "args" on as
// they came), and a []byte would appear base64-encoded; so Args that hold
// a JSON value other than a string appear as that value, compacted
// ({"month":"2026-11"}), and any other Args as base64, as []byte does.
// Decoding reverses it: a JSON string is base64, any other value is the
// Args' bytes (compacted).

// jobFields is Job without its methods, for its JSON form.
type jobFields Job

// MarshalJSON implements json.Marshaler.
func (j Job) MarshalJSON() ([]byte, error) {
	var args any
	if len(j.Args) > 0 {
		args = j.Args // base64
		if argsAreJSON(j.Args) {
			args = json.RawMessage(j.Args)
		}
	}
	return json.Marshal(struct {
		*jobFields
		Args any `json:"args,omitempty"`
	}{(*jobFields)(&j), args})
}

// UnmarshalJSON implements json.Unmarshaler.
func (j *Job) UnmarshalJSON(b []byte) error {
	aux := struct {
		*jobFields
		Args json.RawMessage `json:"args,omitempty"`
	}{jobFields: (*jobFields)(j)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	j.Args = nil
	switch raw := bytes.TrimSpace(aux.Args); {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		return json.Unmarshal(raw, &j.Args) // base64
	default:
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return err
		}
		j.Args = buf.Bytes()
	}
	return nil
}

// argsAreJSON reports whether args hold one JSON value other than a string.
func argsAreJSON(args []byte) bool {
	t := bytes.TrimLeft(args, " \t\r\n")
	return len(t) > 0 && t[0] != '"' && json.Valid(args)
}
