package exporter

// User is the caller of an Exporter method, as the service authenticated
// it. The zero User is unauthenticated: every call made with an empty ID
// fails with ErrUnauthenticated.
type User struct {
	// ID identifies the user; it becomes Job.Owner. Empty means
	// unauthenticated.
	ID string
	// Permissions are the permissions the default PermissionChecker looks
	// in. A custom Config.Permissions checker may ignore them.
	Permissions []string
}

func (u User) authenticated() bool { return u.ID != "" }
