package exporter

import (
	"context"
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
