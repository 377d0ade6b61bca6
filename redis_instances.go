package exporter

import (
	"context"
	"encoding/json"
	"time"
)

// The instances' reports (InstanceBoard) live in one hash,
// <prefix>instances: instance id -> the report as JSON, with the time it
// lapses. Each instance writes its field every instanceEvery (a hundred
// instances make fifty small writes a second: not a hot key), and extends
// the hash's TTL to instanceTTL, so the hash is gone once every instance
// stopped. A reader drops the fields that lapsed (a killed instance's).

func (s *RedisStore) instancesKey() string { return s.prefix + "instances" }

// instanceEntry is a report as stored: the report and when it lapses.
type instanceEntry struct {
	*Instance
	Lapses int64 `json:"lapses"` // Unix ms, by the reporter's clock
}

// ReportInstance implements InstanceBoard.
func (s *RedisStore) ReportInstance(ctx context.Context, in *Instance, ttl time.Duration) error {
	b, err := json.Marshal(instanceEntry{Instance: in, Lapses: in.Seen.Add(ttl).UnixMilli()})
	if err != nil {
		return err
	}
	key := s.instancesKey()
	pipe := s.client.Pipeline()
	pipe.HSet(ctx, key, in.ID, b)
	pipe.PExpire(ctx, key, ttl)
	_, err = pipe.Exec(ctx)
	return err
}

// RemoveInstance implements InstanceBoard.
func (s *RedisStore) RemoveInstance(ctx context.Context, id string) error {
	return s.client.HDel(ctx, s.instancesKey(), id).Err()
}

// Instances implements InstanceBoard. Reports that do not decode, and
// those that lapsed, are left out and removed.
func (s *RedisStore) Instances(ctx context.Context) ([]*Instance, error) {
	key := s.instancesKey()
	h, err := s.client.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	var list []*Instance
	var lapsed []string
	for id, v := range h {
		var en instanceEntry
		if err := json.Unmarshal([]byte(v), &en); err != nil || en.Instance == nil || en.ID != id || en.Lapses < now {
			lapsed = append(lapsed, id)
			continue
		}
		list = append(list, en.Instance)
	}
	if len(lapsed) > 0 {
		s.client.HDel(ctx, key, lapsed...) // best effort: read as lapsed again next time
	}
	return list, nil
}
