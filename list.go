package exporter

import (
	"context"
	"fmt"
)

// ListOptions selects a page of ListExports.
type ListOptions struct {
	// Owner is whose exports to list; "" means the caller's own. Listing
	// another user's needs Config.AdminPermission.
	Owner string
	// Limit is the page size: 0 means 50, at most 1000.
	Limit int
	// Cursor continues a listing: ExportList.Next of the previous page.
	// "" starts at the newest export.
	Cursor string
}

// ExportList is one page of ListExports.
type ExportList struct {
	Jobs []*Job `json:"jobs"`
	// Next is the cursor of the next page, "" after the last one.
	Next string `json:"next,omitempty"`
}

// Limits of ListOptions.Limit.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// ListExports returns a page of the caller's exports (or, for holders of
// Config.AdminPermission, another owner's), newest first. Exports that
// expired are left out. Errors wrap ErrUnauthenticated, ErrForbidden
// (another owner's list without the admin permission, or a failing
// PermissionChecker), ErrInvalid (a bad Limit or Cursor), or are the
// store's. It costs a round trip for the index and one for the page.
func (e *Exporter) ListExports(ctx context.Context, user User, opts ListOptions) (*ExportList, error) {
	list, err := e.list(ctx, user, opts)
	if err != nil {
		return nil, fmt.Errorf("exporter: list: %w", err)
	}
	return list, nil
}

func (e *Exporter) list(ctx context.Context, user User, opts ListOptions) (*ExportList, error) {
	if !user.authenticated() {
		return nil, ErrUnauthenticated
	}
	switch {
	case opts.Limit == 0:
		opts.Limit = DefaultListLimit
	case opts.Limit < 0 || opts.Limit > MaxListLimit:
		return nil, fmt.Errorf("%w: Limit %d, want 1 to %d", ErrInvalid, opts.Limit, MaxListLimit)
	}
	owner := opts.Owner
	if owner == "" {
		owner = user.ID
	}
	if owner != user.ID {
		if e.cfg.AdminPermission == "" {
			return nil, fmt.Errorf("%w: only admins list another user's exports", ErrForbidden)
		}
		if err := e.require(ctx, user, e.cfg.AdminPermission); err != nil {
			return nil, err
		}
	}
	jobs, next, err := e.store.List(ctx, owner, opts.Cursor, opts.Limit)
	if err != nil {
		return nil, err
	}
	if jobs == nil {
		jobs = []*Job{}
	}
	return &ExportList{Jobs: jobs, Next: next}, nil
}
