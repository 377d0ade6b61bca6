package exporter

import (
	"context"
	"errors"
	"fmt"
)

// ListOptions selects a page of ListExports.
type ListOptions struct {
	// Owner is whose exports to list; "" means the caller's own. Listing
	// another user's needs Config.AdminPermission.
	Owner string
	// AllOwners lists every owner's exports, newest first: an operator's
	// view. It needs Config.AdminPermission and a Store that implements
	// AllLister (RedisStore does); Owner must be "".
	AllOwners bool
	// Status, if set, keeps only the exports in that status. The page is
	// read and then filtered, so it may hold fewer than Limit exports when
	// more follow (Next says whether they do): a listing reads at most
	// statusScan entries per page.
	Status Status
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
	if opts.Status != "" && !opts.Status.valid() {
		return nil, fmt.Errorf("%w: Status %s, want pending, running, completed, failed or cancelled", ErrInvalid, quoteCapped(string(opts.Status)))
	}
	owner := opts.Owner
	if owner == "" {
		owner = user.ID
	}
	page := func(cursor string, limit int) ([]*Job, string, error) {
		return e.store.List(ctx, owner, cursor, limit)
	}
	if opts.AllOwners {
		if opts.Owner != "" {
			return nil, fmt.Errorf("%w: AllOwners with Owner %s: choose one", ErrInvalid, quoteCapped(opts.Owner))
		}
		all, ok := e.store.(AllLister)
		if !ok {
			return nil, fmt.Errorf("%w: the store cannot list every owner's exports (it is no AllLister)", errors.ErrUnsupported)
		}
		page = func(cursor string, limit int) ([]*Job, string, error) { return all.ListAll(ctx, cursor, limit) }
	}
	if opts.AllOwners || owner != user.ID {
		if err := e.requireAdmin(ctx, user); err != nil {
			return nil, fmt.Errorf("only admins list another user's exports: %w", err)
		}
	}
	if opts.Status == "" {
		jobs, next, err := page(opts.Cursor, opts.Limit)
		if err != nil {
			return nil, err
		}
		if jobs == nil {
			jobs = []*Job{}
		}
		return &ExportList{Jobs: jobs, Next: next}, nil
	}
	// Filtered: read pages no larger than what is still wanted, so that a
	// page's cursor is exactly where the listing stops.
	list := &ExportList{Jobs: []*Job{}, Next: opts.Cursor}
	for scanned := 0; scanned < statusScan; {
		jobs, next, err := page(list.Next, min(opts.Limit-len(list.Jobs), statusScan-scanned))
		if err != nil {
			return nil, err
		}
		if len(jobs) == 0 {
			// A page that lists nothing ends the scan: a store that keeps
			// answering so with a cursor cannot make it loop.
			list.Next = next
			break
		}
		scanned += len(jobs)
		for _, j := range jobs {
			if j.Status == opts.Status {
				list.Jobs = append(list.Jobs, j)
			}
		}
		list.Next = next
		if next == "" || len(list.Jobs) == opts.Limit {
			break
		}
	}
	return list, nil
}

// statusScan is how many exports a listing filtered by status reads at
// most for one page.
const statusScan = 2000

// AllLister is the optional ability of a Store to list every owner's jobs
// (ListOptions.AllOwners), as database/sql/driver's optional interfaces
// are. RedisStore implements it.
type AllLister interface {
	// ListAll returns up to limit jobs of every owner, newest first, after
	// cursor ("" for the newest), and the cursor of the next page ("" after
	// the last). A malformed cursor is an error wrapping ErrInvalid.
	ListAll(ctx context.Context, cursor string, limit int) (jobs []*Job, next string, err error)
}
