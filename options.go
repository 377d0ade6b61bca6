package exporter

import (
	"fmt"
	"maps"
	"unicode/utf8"
)

// StartOption configures one StartExport call.
type StartOption func(*startOptions)

type startOptions struct {
	total    int64
	metadata map[string]string
}

// Limits on WithMetadata, so that a caller cannot make a job record
// arbitrarily large.
const (
	MaxMetadataEntries = 32
	MaxMetadataKey     = 128  // bytes
	MaxMetadataValue   = 1024 // bytes
)

// WithTotal records the expected size of the export, for progress
// (Job.Total, Job.Progress). It is a hint: the export is not failed when
// the reader delivers a different number of bytes. A negative n is
// rejected with ErrInvalid, one above Config.MaxBytes with ErrTooLarge.
func WithTotal(n int64) StartOption {
	return func(o *startOptions) { o.total = n }
}

// Conventional metadata keys. The Exporter gives metadata no meaning of
// its own; these are the keys the examples and exportctl use, so that an
// export started by one program is downloaded with the name and type it
// gave, whichever program serves it.
const (
	MetadataFilename    = "filename"     // the download's file name
	MetadataContentType = "content-type" // its media type, as in a Content-Type header
)

// WithMetadata attaches md to the job (Job.Metadata): a filename, a
// content type (see MetadataFilename, MetadataContentType), anything the
// service wants to show or serve with it. The map is copied. At most MaxMetadataEntries entries, keys of 1 to
// MaxMetadataKey bytes and values of at most MaxMetadataValue bytes, all valid UTF-8;
// beyond that StartExport returns ErrInvalid.
func WithMetadata(md map[string]string) StartOption {
	return func(o *startOptions) { o.metadata = maps.Clone(md) }
}

// applyOptions applies opts (nil ones are skipped) and validates the
// result against maxBytes.
func applyOptions(opts []StartOption, maxBytes int64) (startOptions, error) {
	var o startOptions
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o, o.validate(maxBytes)
}

func (o *startOptions) validate(maxBytes int64) error {
	if o.total < 0 {
		return fmt.Errorf("%w: WithTotal(%d) is negative", ErrInvalid, o.total)
	}
	if o.total > maxBytes {
		return fmt.Errorf("%w: WithTotal(%d) is above MaxBytes %d", ErrTooLarge, o.total, maxBytes)
	}
	if len(o.metadata) > MaxMetadataEntries {
		return fmt.Errorf("%w: %d metadata entries, at most %d", ErrInvalid, len(o.metadata), MaxMetadataEntries)
	}
	for k, v := range o.metadata {
		if len(k) == 0 || len(k) > MaxMetadataKey {
			return fmt.Errorf("%w: metadata key of %d bytes, want 1 to %d", ErrInvalid, len(k), MaxMetadataKey)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("%w: metadata %q is not valid UTF-8", ErrInvalid, k)
		}
		if len(v) > MaxMetadataValue {
			return fmt.Errorf("%w: metadata %q value of %d bytes, at most %d", ErrInvalid, k, len(v), MaxMetadataValue)
		}
	}
	return nil
}
