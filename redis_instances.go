package exporter

import (
	"context"
	"encoding/json"
	"time"
)

// The instances' reports (InstanceBoard) live in one hash,
// <prefix>instances: instance id -> when the report lapses and the report
// as JSON. Each instance writes its field every instanceEvery (a hundred
// instances make fifty small writes a second: not a hot key), and extends
// the hash's TTL to instanceTTL, so the hash is gone once every instance
// stopped. A reader drops the fields that lapsed (a killed instance's).
// When a report lapses is the server's time, never an instance's: clocks
// that disagree cannot make one instance drop another's report.

func (s *RedisStore) instancesKey() string { return s.prefix + "instances" }

// ReportInstance implements InstanceBoard.
func (s *RedisStore) ReportInstance(ctx context.Context, in *Instance, ttl time.Duration) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return scriptInstanceReport.Run(ctx, s.client, []string{s.instancesKey()}, in.ID, b, max(ttl.Milliseconds(), 1)).Err()
}

// RemoveInstance implements InstanceBoard.
func (s *RedisStore) RemoveInstance(ctx context.Context, id string) error {
	return s.client.HDel(ctx, s.instancesKey(), id).Err()
}

// Instances implements InstanceBoard. Reports that do not decode are left
// out.
func (s *RedisStore) Instances(ctx context.Context) ([]*Instance, error) {
	res, err := scriptInstances.Run(ctx, s.client, []string{s.instancesKey()}).StringSlice()
	if err != nil {
		return nil, err
	}
	var list []*Instance
	for i := 0; i+1 < len(res); i += 2 {
		var in Instance
		if err := json.Unmarshal([]byte(res[i+1]), &in); err != nil || in.ID != res[i] {
			continue
		}
		list = append(list, &in)
	}
	return list, nil
}
