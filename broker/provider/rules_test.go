package provider

import (
	"strings"
	"testing"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

func TestRules(t *testing.T) {
	for _, tt := range []struct {
		status, want string
		ok           bool
	}{{"", CertificateActive, true}, {"INACTIVE", CertificateInactive, true}, {"REVOKED", CertificateRevoked, true}, {"active", "", false}} {
		got, err := CertificateStatus(tt.status)
		if got != tt.want || (err == nil) != tt.ok || (err != nil && !errkind.Is(err, errkind.Invalid)) {
			t.Errorf("CertificateStatus(%q) = %q, %v", tt.status, got, err)
		}
	}
	for name, ok := range map[string]bool{"core-1": true, "a_b": true, "a:b": false, "café": false, "": false, strings.Repeat("x", 128): true, strings.Repeat("x", 129): false,
		"Zz09_-": true, "a b": false, "core-1\n": false, "a.b": false, "a@b": false} {
		if err := CheckName("thing name", name); (err == nil) != ok {
			t.Errorf("CheckName(%q) = %v", name, err)
		}
	}
	for name, ok := range map[string]bool{"ggfleet-core-policy": true, "a.b@c=d,e+f": true, "a/b": false, "": false,
		"a:b": false, "a b": false, strings.Repeat("p", 128): true, strings.Repeat("p", 129): false, "pol\n": false} {
		if err := CheckPolicyName(name); (err == nil) != ok {
			t.Errorf("CheckPolicyName(%q) = %v", name, err)
		}
	}
}
