//go:build !linux

package installer

import "errors"

// freeBytes is not implemented off Linux; the installer targets Linux.
func freeBytes(string) (uint64, error) {
	return 0, errors.New("free disk space: only supported on Linux")
}
