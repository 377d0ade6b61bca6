package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/exporterkit/exporter"
)

// runAdmin runs the subtests of the optional abilities an operator's view
// uses: AllLister and InstanceBoard. Each is skipped for a store without
// the ability.
func runAdmin(t *testing.T, h Harness) {
	t.Run("ListAll", func(t *testing.T) {
		s := &suite{t: t, h: h, store: h.New(t)}
		all, ok := s.store.(exporter.AllLister)
		if !ok {
			t.Skip("the store does not implement AllLister")
		}
		testListAll(t, s, all)
	})
	t.Run("Instances", func(t *testing.T) {
		s := &suite{t: t, h: h, store: h.New(t)}
		board, ok := s.store.(exporter.InstanceBoard)
		if !ok {
			t.Skip("the store does not implement InstanceBoard")
		}
		testInstances(t, s, board)
	})
}

// testListAll: every owner's jobs, newest first, each once, across pages
// of any size; a malformed cursor is ErrInvalid.
func testListAll(t *testing.T, s *suite, all exporter.AllLister) {
	var want []string // newest first
	for i := range 7 {
		job, _ := s.create([]string{"alice", "bob", "carol"}[i%3])
		want = append([]string{job.ID}, want...)
		s.elapse(2 * time.Millisecond)
	}
	for _, limit := range []int{1, 2, 7, 50} {
		var got []string
		cursor := ""
		for page := 0; ; page++ {
			if page > len(want) {
				t.Fatalf("limit %d: the listing does not end", limit)
			}
			jobs, next, err := all.ListAll(s.ctx(), cursor, limit)
			s.must(err, "ListAll")
			if len(jobs) > limit {
				t.Fatalf("limit %d: a page of %d", limit, len(jobs))
			}
			for _, j := range jobs {
				got = append(got, j.ID)
			}
			if cursor = next; cursor == "" {
				break
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: listed %v, want %v (newest first, each once)", limit, got, want)
		}
	}
	_, _, err := all.ListAll(s.ctx(), "not a cursor", 10)
	s.is(err, exporter.ErrInvalid, "ListAll with a malformed cursor")
}

// testInstances: a report is kept and replaced, a lapsed one is left
// out, a removed one is gone. A report lapses by the store's clock, not
// by its Seen, which is the reporter's (c's clock is an hour behind).
func testInstances(t *testing.T, s *suite, board exporter.InstanceBoard) {
	now := time.Now()
	a := &exporter.Instance{ID: "a-1-x", Host: "a", Seen: now, Running: 1, Failures: map[string]int64{exporter.CodeSource: 2}}
	b := &exporter.Instance{ID: "b-1-x", Host: "b", Seen: now}
	c := &exporter.Instance{ID: "c-1-x", Host: "c", Seen: now.Add(-time.Hour)}
	old := &exporter.Instance{ID: "d-1-x", Host: "d", Seen: now}
	s.must(board.ReportInstance(s.ctx(), old, 20*time.Millisecond), "ReportInstance")
	s.elapse(60 * time.Millisecond)
	for _, in := range []*exporter.Instance{a, b, c} {
		s.must(board.ReportInstance(s.ctx(), in, 10*time.Second), "ReportInstance")
	}
	a2 := *a
	a2.Running = 3
	s.must(board.ReportInstance(s.ctx(), &a2, 10*time.Second), "ReportInstance again")
	byID := func() map[string]*exporter.Instance {
		list, err := board.Instances(s.ctx())
		s.must(err, "Instances")
		m := map[string]*exporter.Instance{}
		for _, in := range list {
			m[in.ID] = in
		}
		return m
	}
	m := byID()
	if len(m) != 3 || m[a.ID] == nil || m[b.ID] == nil || m[c.ID] == nil {
		t.Fatalf("Instances = %v, want a, b and c (d lapsed)", m)
	}
	if m[a.ID].Running != 3 || m[a.ID].Failures[exporter.CodeSource] != 2 || m[a.ID].Host != "a" {
		t.Fatalf("a's report reads %+v, want the second one", m[a.ID])
	}
	s.must(board.RemoveInstance(s.ctx(), b.ID), "RemoveInstance")
	if _, ok := byID()[b.ID]; ok {
		t.Fatal("a removed report is still listed")
	}
	if err := board.RemoveInstance(s.ctx(), "none-1-x"); err != nil && !errors.Is(err, exporter.ErrNotFound) {
		t.Fatalf("removing a report never made: %v", err)
	}
}
