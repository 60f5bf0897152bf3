package cli

import "testing"

func TestParseSSHTarget(t *testing.T) {
	tests := []struct {
		in, user, addr string
		bad            bool
	}{
		{in: "root@10.0.0.5", user: "root", addr: "10.0.0.5:22"},
		{in: "pi@gw.local:2222", user: "pi", addr: "gw.local:2222"},
		{in: "admin@[fe80::1]:22", user: "admin", addr: "[fe80::1]:22"},
		{in: "admin@fe80::1", user: "admin", addr: "[fe80::1]:22"},
		{in: "10.0.0.5", bad: true},
		{in: "@host", bad: true},
		{in: "root@", bad: true},
		{in: "root@:22", bad: true},
	}
	for _, tt := range tests {
		user, addr, err := parseSSHTarget(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("parseSSHTarget(%q) = %q %q, want an error", tt.in, user, addr)
			}
			continue
		}
		if err != nil || user != tt.user || addr != tt.addr {
			t.Errorf("parseSSHTarget(%q) = %q %q %v, want %q %q", tt.in, user, addr, err, tt.user, tt.addr)
		}
	}
}

func TestRemoteArch(t *testing.T) {
	tests := map[string]string{"x86_64\n": "amd64", "aarch64": "arm64", "armv7l": "armv7", "armv8l": "armv7", "mips": "", "i686": ""}
	for in, want := range tests {
		got, err := remoteArch(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("remoteArch(%q) = %q %v, want %q", in, got, err, want)
		}
	}
}
