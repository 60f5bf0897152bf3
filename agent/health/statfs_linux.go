//go:build linux

package health

import (
	"fmt"
	"syscall"
)

// diskFree returns the bytes available to unprivileged users on the
// filesystem holding path.
func diskFree(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
