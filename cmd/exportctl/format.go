package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/exporterkit/exporter"
)

// writeJSON writes v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// writeJob writes job for people, a field per line, leaving out the
// unset ones. now dates the relative times.
func writeJob(w io.Writer, job *exporter.Job, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t%s\n", k, fmt.Sprintf(format, args...))
	}
	line("id", "%s", job.ID)
	line("owner", "%s", job.Owner)
	line("status", "%s", job.Status)
	if job.Kind != "" {
		line("kind", "%s (durable), attempt %d", job.Kind, job.Attempt)
	}
	switch {
	case job.Total > 0:
		line("bytes", "%d of %d (%s of %s)", job.Bytes, job.Total, formatBytes(job.Bytes), formatBytes(job.Total))
	default:
		line("bytes", "%d (%s; total unknown)", job.Bytes, formatBytes(job.Bytes))
	}
	if job.Read > job.Bytes {
		line("read", "%d (%s; stored a chunk at a time)", job.Read, formatBytes(job.Read))
	}
	line("progress", "%s", formatProgress(job))
	if job.Checksum != "" {
		line("checksum", "%s", job.Checksum)
	}
	if job.Error != "" {
		line("error", "%s", cleanReason(job.Error))
		if job.ErrorCode != "" {
			line("error code", "%s", job.ErrorCode)
		}
	}
	line("created", "%s", formatTime(job.CreatedAt, now))
	if !job.StartedAt.IsZero() {
		line("started", "%s", formatTime(job.StartedAt, now))
	}
	if !job.FinishedAt.IsZero() {
		line("finished", "%s", formatTime(job.FinishedAt, now))
	}
	line("updated", "%s", formatTime(job.UpdatedAt, now))
	line("expires", "%s", formatTime(job.ExpiresAt, now))
	for _, k := range slices.Sorted(maps.Keys(job.Metadata)) {
		line("metadata", "%s=%s", k, job.Metadata[k])
	}
	return tw.Flush()
}

// jobLine is job on one line, as watch and wait print it.
func jobLine(job *exporter.Job, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  %-9s %s", now.Local().Format(time.TimeOnly), job.ID, job.Status, formatBytes(max(job.Read, job.Bytes)))
	if job.Total > 0 {
		fmt.Fprintf(&b, " of %s", formatBytes(job.Total))
	}
	if p := formatProgress(job); p != "-" {
		fmt.Fprintf(&b, "  %s", p)
	}
	if job.Attempt > 1 {
		fmt.Fprintf(&b, "  attempt %d", job.Attempt)
	}
	switch {
	case job.Checksum != "":
		fmt.Fprintf(&b, "  %s", job.Checksum)
	case job.Error != "":
		fmt.Fprintf(&b, "  (%s)", cleanReason(job.Error))
	}
	return b.String()
}

// writeTable writes jobs as the list table.
func writeTable(w io.Writer, jobs []*exporter.Job) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tBYTES\tPROGRESS\tCREATED\tFILENAME")
	for _, j := range jobs {
		name := j.Metadata[exporter.MetadataFilename]
		if name == "" {
			name = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Status, formatBytes(max(j.Read, j.Bytes)),
			formatProgress(j), j.CreatedAt.Local().Format(time.DateTime), name)
	}
	return tw.Flush()
}

// formatProgress is Job.Progress as a percentage, "-" when it means
// nothing (an unfinished job of unknown size).
func formatProgress(job *exporter.Job) string {
	if job.Total <= 0 && job.Status != exporter.StatusCompleted {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*job.Progress())
}

// formatBytes writes n in binary units with one decimal: 512 B, 3.0 MiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatRate is a rate in bytes per second.
func formatRate(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "- B/s"
	}
	return formatBytes(int64(float64(bytes)/d.Seconds())) + "/s"
}

// formatTime is t in local time with how long ago (or ahead) of now it is.
func formatTime(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	rel := "ago"
	if d < 0 {
		d, rel = -d, "from now"
	}
	return fmt.Sprintf("%s (%s %s)", t.Local().Format(time.RFC3339), formatDuration(d), rel)
}

// formatDuration is roundDuration(d) without a trailing "0s": 24h0m.
func formatDuration(d time.Duration) string {
	s := roundDuration(d).String()
	if d >= time.Minute {
		s = strings.TrimSuffix(s, "0s")
	}
	return s
}

// roundDuration keeps a duration's two most significant units or so:
// 850ms, 12s, 3m4s, 23h59m.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond)
	case d < time.Hour:
		return d.Round(time.Second)
	}
	return d.Round(time.Minute)
}
