//go:build !linux

package health

import "errors"

// diskFree is only implemented on Linux, where the agent runs.
func diskFree(string) (uint64, error) {
	return 0, errors.New("disk free space is only measured on Linux")
}
