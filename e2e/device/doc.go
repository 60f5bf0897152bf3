// Package device is the fresh-device test (`make e2e-device`): it boots a
// minimal Debian root file system with systemd as PID 1 under
// systemd-nspawn and installs ggagent into it the two ways a device owner
// would, the .deb and the broker-served install.sh, against a ggfleet
// broker on the host; and the operator's way, `ggfleet cores bootstrap`
// over SSH into a root file system with openssh-server. It needs root, debootstrap, systemd-nspawn and the
// `make package` outputs in dist/, hence the devicetest build tag on the
// tests that keeps them out of `go test ./...`.
package device
