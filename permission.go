package exporter

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// PermissionChecker decides whether a user holds a permission. The
// Exporter asks it for Config.Permission before starting an export and for
// Config.AdminPermission before letting a user see, cancel or open another
// user's export. An error denies (the Exporter fails closed) and is returned
// to the caller wrapped.
//
// Implementations must be safe for concurrent use.
type PermissionChecker interface {
	HasPermission(ctx context.Context, user User, permission string) (bool, error)
}

// PermissionFunc adapts a function to PermissionChecker.
type PermissionFunc func(ctx context.Context, user User, permission string) (bool, error)

// HasPermission calls f.
func (f PermissionFunc) HasPermission(ctx context.Context, user User, permission string) (bool, error) {
	return f(ctx, user, permission)
}

// userPermissions is the default checker: the permission is one of
// User.Permissions.
type userPermissions struct{}

func (userPermissions) HasPermission(_ context.Context, user User, permission string) (bool, error) {
	return slices.Contains(user.Permissions, permission), nil
}

// require checks that user holds permission. A checker error denies.
func (e *Exporter) require(ctx context.Context, user User, permission string) error {
	ok, err := e.cfg.Permissions.HasPermission(ctx, user, permission)
	if err != nil {
		return fmt.Errorf("%w: permission check: %w", ErrForbidden, err)
	}
	if !ok {
		return fmt.Errorf("%w: user %q lacks permission %q", ErrForbidden, user.ID, permission)
	}
	return nil
}

// visible reads job id and checks that user may see it. The owner's read
// is one round trip; another user's costs an admin check and a second
// read, and changes nothing unless that user is an admin.
func (e *Exporter) visible(ctx context.Context, user User, id string) (*Job, error) {
	return e.asOwnerOrAdmin(ctx, user, id, func(owner string) (*Job, error) {
		return e.store.Get(ctx, id, owner)
	})
}

// asOwnerOrAdmin runs op for user's own job (op(user.ID)) and, if that
// finds nothing, for an admin on anyone's job (op("")). A failing checker
// answers alike for an unknown id and another user's job.
func (e *Exporter) asOwnerOrAdmin(ctx context.Context, user User, id string, op func(owner string) (*Job, error)) (*Job, error) {
	if !user.authenticated() {
		return nil, ErrUnauthenticated
	}
	if !validID(id) {
		return nil, ErrNotFound
	}
	job, err := op(user.ID)
	if !errors.Is(err, ErrNotFound) {
		return job, err
	}
	if err := e.admin(ctx, user); err != nil {
		return nil, err
	}
	return op("")
}

// admin returns nil if user holds Config.AdminPermission, an error
// wrapping ErrNotFound if not, and one wrapping ErrForbidden and the
// checker's error if the checker failed.
func (e *Exporter) admin(ctx context.Context, user User) error {
	if e.cfg.AdminPermission == "" {
		return ErrNotFound
	}
	ok, err := e.cfg.Permissions.HasPermission(ctx, user, e.cfg.AdminPermission)
	if err != nil {
		return fmt.Errorf("%w: permission check: %w", ErrForbidden, err)
	}
	if !ok {
		return ErrNotFound
	}
	return nil
}

// CheckAdmin returns nil if user holds Config.AdminPermission, and else an
// error wrapping ErrUnauthenticated (no user) or ErrForbidden (not an
// admin, no AdminPermission configured, or a failing PermissionChecker),
// for a service that gates its own operator pages as the Exporter gates
// AllOwners and Instances.
func (e *Exporter) CheckAdmin(ctx context.Context, user User) error {
	if !user.authenticated() {
		return fmt.Errorf("exporter: check admin: %w", ErrUnauthenticated)
	}
	if err := e.requireAdmin(ctx, user); err != nil {
		return fmt.Errorf("exporter: check admin: %w", err)
	}
	return nil
}

// requireAdmin is CheckAdmin's test: nil, or an error wrapping
// ErrForbidden.
func (e *Exporter) requireAdmin(ctx context.Context, user User) error {
	if e.cfg.AdminPermission == "" {
		return fmt.Errorf("%w: Config.AdminPermission is unset: nobody is an admin", ErrForbidden)
	}
	return e.require(ctx, user, e.cfg.AdminPermission)
}
