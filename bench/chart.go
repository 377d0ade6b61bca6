package main

import (
	"errors"
	"fmt"
	"html"
	"math"
	"os"
	"runtime"
	"strings"
)

// chartPoints are the chunk sizes of the chart and the workloads that
// measured them.
var chartPoints = []struct {
	id    string
	size  int
	label string
}{
	{"W2b-4K", 4 << 10, "4 KiB"},
	{"W2b-16K", 16 << 10, "16 KiB"},
	{"W2", 64 << 10, "64 KiB"},
	{"W2b-1M", 1 << 20, "1 MiB"},
}

// writeChart writes an SVG line chart of the W2/W2b medians: MB/s against
// chunk size (on a log scale), exporter and raw side by side, with the
// 0.9 x raw target as a dashed line.
func writeChart(path string, results []*result, b *bench) error {
	type point struct {
		x, exp, raw float64
		label       string
	}
	var pts []point
	for _, p := range chartPoints {
		for _, r := range results {
			if r.id == p.id && len(r.exp) > 0 && len(r.raw) > 0 {
				pts = append(pts, point{math.Log2(float64(p.size)), median(r.exp), median(r.raw), p.label})
			}
		}
	}
	if len(pts) == 0 {
		return errors.New("no W2 or W2b figures to draw (see -only)")
	}
	const (
		width, height          = 760, 460
		left, right, top, bott = 80, 170, 70, 60
	)
	plotW, plotH := float64(width-left-right), float64(height-top-bott)
	top1 := 0.0
	for _, p := range pts {
		top1 = max(top1, p.exp, p.raw)
	}
	step := niceStep(top1 / 5)
	ymax := math.Ceil(top1*1.05/step) * step
	xmin, xmax := math.Log2(4<<10), math.Log2(1<<20)
	px := func(x float64) float64 { return float64(left) + (x-xmin)/(xmax-xmin)*plotW }
	py := func(y float64) float64 { return float64(top) + plotH - y/ymax*plotH }

	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&s, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	title := fmt.Sprintf("One %d MiB export: MB/s against chunk size (medians, -reps %d)", b.sizes.exportBytes>>20, b.opts.reps)
	if b.sizes.quick {
		title += ", QUICK RUN"
	}
	fmt.Fprintf(&s, `<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	sub := fmt.Sprintf("exporter: StartExport until completed; raw: RPUSH, %d per pipeline round trip. %s, %d CPUs, %s",
		rawInFlight, cpuModel(), runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(&s, `<text x="%d" y="44" fill="#555">%s</text>`+"\n", left, html.EscapeString(sub))

	// Grid and y axis.
	for y := 0.0; y <= ymax+step/2; y += step {
		fmt.Fprintf(&s, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, py(y), float64(left)+plotW, py(y))
		fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="end">%g</text>`+"\n", left-8, py(y)+4, y)
	}
	fmt.Fprintf(&s, `<text transform="translate(22 %.1f) rotate(-90)" text-anchor="middle">MB/s (MB = 1e6 bytes)</text>`+"\n", float64(top)+plotH/2)
	// X axis.
	fmt.Fprintf(&s, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", left, py(0), float64(left)+plotW, py(0))
	for _, p := range chartPoints {
		x := px(math.Log2(float64(p.size)))
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`+"\n", x, py(0), x, py(0)+5)
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, py(0)+20, p.label)
	}
	fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">chunk size (log scale)</text>`+"\n", float64(left)+plotW/2, height-14)

	series := []struct {
		name, color, dash string
		y                 func(point) float64
	}{
		{"raw go-redis", "#e6862b", "", func(p point) float64 { return p.raw }},
		{"exporter", "#1f6fb4", "", func(p point) float64 { return p.exp }},
		{"0.9 x raw (target)", "#999", "5,4", func(p point) float64 { return 0.9 * p.raw }},
	}
	for i, se := range series {
		var coords []string
		for _, p := range pts {
			coords = append(coords, fmt.Sprintf("%.1f,%.1f", px(p.x), py(se.y(p))))
		}
		dash := ""
		if se.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, se.dash)
		}
		fmt.Fprintf(&s, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(coords, " "), se.color, dash)
		if se.dash == "" {
			for _, p := range pts {
				x, y := px(p.x), py(se.y(p))
				fmt.Fprintf(&s, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>`+"\n", x, y, se.color)
				dy := -9.0
				if se.name == "exporter" && se.y(p) < p.raw {
					dy = 18
				}
				fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" text-anchor="middle" fill="%s">%.0f</text>`+"\n", x, y+dy, se.color, se.y(p))
			}
		}
		ly := float64(top + 10 + 22*i)
		lx := float64(left) + plotW + 20
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly, lx+24, ly, se.color, dash)
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+30, ly+4, html.EscapeString(se.name))
	}
	s.WriteString("</svg>\n")
	return os.WriteFile(path, []byte(s.String()), 0o644)
}

// niceStep rounds a raw grid step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}
