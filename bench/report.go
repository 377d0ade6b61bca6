package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// A workload is measured by two sides, the exporter and its raw go-redis
// baseline, run alternately. A side returns its figures by row id.
type workload struct {
	id, desc string
	rows     []row
	// prepare runs once before the repetitions (the jobs W3 reads, the
	// export W5 downloads) and keeps its keys under bench.setup; teardown
	// runs after them, also on error. Both are optional.
	prepare  func(ctx context.Context) error
	teardown func(ctx context.Context) error
	exporter side
	raw      side // nil for M1 and M3
}

type side func(ctx context.Context, m *meter) (map[string]float64, error)

// row is one figure of the table and one RESULT line.
type row struct {
	id, unit    string
	lowerBetter bool
	// limit: target bounds the exporter's figure itself (M1-M3), and the
	// raw side, if any, is shown for comparison only. Otherwise target
	// bounds the ratio exporter/raw.
	limit  bool
	target float64 // 0: reported, no target
	prec   int     // decimals of the figure
}

func (r row) targetText() string {
	if r.target == 0 {
		return "(reported)"
	}
	op := ">="
	if r.lowerBetter {
		op = "<="
	}
	if r.limit {
		return fmt.Sprintf("%s %s", op, fmtFloat(r.target, r.prec))
	}
	return fmt.Sprintf("%s %gx raw", op, r.target)
}

// result gathers a row's figures over the repetitions.
type result struct {
	row
	exp, raw       []float64
	expCPU, rawCPU [][2]float64 // redis %, go % per repetition
}

func (r *result) ratio() float64 {
	if len(r.raw) == 0 || median(r.raw) == 0 {
		return 0
	}
	return median(r.exp) / median(r.raw)
}

func (r *result) met() bool {
	v := r.ratio()
	if r.limit {
		v = median(r.exp)
	}
	if r.lowerBetter {
		return v <= r.target
	}
	return v >= r.target
}

func (r *result) resultLine() string {
	if r.limit {
		return fmt.Sprintf("RESULT %s exporter=%s limit=%s", r.id, fmtFloat(median(r.exp), r.prec), fmtFloat(r.target, r.prec))
	}
	return fmt.Sprintf("RESULT %s exporter=%s raw=%s ratio=%.3f", r.id,
		fmtFloat(median(r.exp), r.prec), fmtFloat(median(r.raw), r.prec), r.ratio())
}

// runWorkload runs w's sides alternately, -reps times each, deleting the
// keys of every side before the next one starts.
func (b *bench) runWorkload(ctx context.Context, w *workload) (res []*result, err error) {
	fmt.Printf("\n== %s: %s\n", w.id, w.desc)
	if w.prepare != nil {
		defer func() {
			tctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if w.teardown != nil {
				err = errors.Join(err, w.teardown(tctx))
			}
			err = errors.Join(err, b.deleteKeys(tctx, b.setup), b.waitLazyfree(tctx))
		}()
		pctx, cancel := context.WithTimeout(ctx, b.sizes.sideTimeout)
		err := w.prepare(pctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("prepare: %w", err)
		}
	}
	for _, r := range w.rows {
		res = append(res, &result{row: r})
	}
	sides := []struct {
		name string
		run  side
	}{{"exporter", w.exporter}, {"raw", w.raw}}
	for rep := 1; rep <= b.opts.reps; rep++ {
		for _, s := range sides {
			if s.run == nil {
				continue
			}
			m := &meter{b: b}
			sctx, cancel := context.WithTimeout(ctx, b.sizes.sideTimeout)
			vals, err := s.run(sctx, m)
			cancel()
			// Clean even after an error, under a context of its own.
			cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
			cerr := b.clean(cctx)
			ccancel()
			if err != nil {
				return nil, fmt.Errorf("%s side, repetition %d: %w", s.name, rep, err)
			}
			if cerr != nil {
				return nil, fmt.Errorf("cleaning up after the %s side: %w", s.name, cerr)
			}
			redisPct, goPct := m.cpu()
			var parts []string
			for _, r := range res {
				v, ok := vals[r.id]
				if !ok {
					if s.name == "exporter" || !r.limit {
						return nil, fmt.Errorf("%s side returned no %s", s.name, r.id)
					}
					continue
				}
				if s.name == "exporter" {
					r.exp = append(r.exp, v)
					r.expCPU = append(r.expCPU, [2]float64{redisPct, goPct})
				} else {
					r.raw = append(r.raw, v)
					r.rawCPU = append(r.rawCPU, [2]float64{redisPct, goPct})
				}
				parts = append(parts, fmt.Sprintf("%s %s %s", r.id, fmtFloat(v, r.prec), r.unit))
			}
			line := fmt.Sprintf("  rep %d/%d %-8s %s", rep, b.opts.reps, s.name, strings.Join(parts, ", "))
			if m.started {
				line += fmt.Sprintf("  (measured %.2fs; cpu: redis %.0f%%, go %.0f%%)", m.elapsed().Seconds(), redisPct, goPct)
			}
			fmt.Println(line)
			if b.opts.verbose && m.started {
				fmt.Printf("      redis commands: %s\n", m.commands())
			}
		}
	}
	return res, nil
}

// printTable prints the medians, min-max, ratios and targets.
func printTable(w io.Writer, results []*result, s sizes) {
	title := "Medians over the repetitions, [min-max]; ratio = exporter median / raw median."
	if s.quick {
		title += " QUICK RUN: reduced sizes."
	}
	fmt.Fprintln(w, title)
	fmt.Fprintln(w, "cpu = Redis / bench process CPU in % of one core during the measured section (medians).")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tunit\texporter\traw\tratio\ttarget\tmet\tcpu exporter\tcpu raw")
	for _, r := range results {
		raw, ratio, rawCPU := "-", "-", "-"
		if len(r.raw) > 0 {
			raw = spread(r.raw, r.prec)
			rawCPU = cpuText(r.rawCPU)
			if !r.limit {
				ratio = fmt.Sprintf("%.3f", r.ratio())
			}
		}
		met := "yes"
		switch {
		case r.target == 0:
			met = "-"
		case !r.met():
			met = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.id, r.unit, spread(r.exp, r.prec), raw,
			ratio, r.targetText(), met, cpuText(r.expCPU), rawCPU)
	}
	tw.Flush()
}

func spread(v []float64, prec int) string {
	return fmt.Sprintf("%s [%s-%s]", fmtFloat(median(v), prec), fmtFloat(slices.Min(v), prec), fmtFloat(slices.Max(v), prec))
}

func cpuText(c [][2]float64) string {
	if len(c) == 0 || (c[0][0] == 0 && c[0][1] == 0) {
		return "-"
	}
	var r, g []float64
	for _, x := range c {
		r, g = append(r, x[0]), append(g, x[1])
	}
	return fmt.Sprintf("%.0f/%.0f%%", median(r), median(g))
}

func fmtFloat(v float64, prec int) string { return fmt.Sprintf("%.*f", prec, v) }

// median returns the median of v (the mean of the middle two for an even
// count), or 0 for none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile returns the pct-th percentile (1 to 100) of v by the
// nearest-rank method: the smallest value that at least pct% of v do not
// exceed.
func percentile(v []float64, pct int) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	rank := (pct*len(s) + 99) / 100 // ceil(pct/100 * n), 1-based
	return s[min(max(rank-1, 0), len(s)-1)]
}
