//go:build !linux

package db

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist: keepalives still apply.
func setUserTimeout(fd uintptr, ms int) error { return nil }
