package provider

import (
	"strings"

	"github.com/ggfleet/ggfleet/broker/errkind"
)

// Certificate statuses, as AWS IoT names them.
const (
	CertificateActive   = "ACTIVE"
	CertificateInactive = "INACTIVE"
	CertificateRevoked  = "REVOKED"
)

// CertificateStatus checks a status given to RegisterCertificate and
// returns it, with "" meaning ACTIVE; errkind.Invalid otherwise.
func CertificateStatus(status string) (string, error) {
	switch status {
	case "":
		return CertificateActive, nil
	case CertificateActive, CertificateInactive, CertificateRevoked:
		return status, nil
	}
	return "", errkind.New(errkind.Invalid, "certificate status %q is not valid: use ACTIVE, INACTIVE or REVOKED", status)
}

// validName reports whether name has 1 to 128 characters, each a letter
// a-z or A-Z, a digit, '_', '-' or one of extra: the names every provider
// enforces. Thing, core, device and group names follow DESIGN.md (stricter
// than AWS: no ':'), policy names AWS IoT's pattern. A loop rather than a
// regexp: every core a task provisions checks several names.
func validName(name, extra string) bool {
	if len(name) < 1 || len(name) > 128 {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		case strings.IndexByte(extra, c) < 0:
			return false
		}
	}
	return true
}

// CheckName validates a thing or thing-group name; what names it in the
// message ("thing name", "thing group name").
func CheckName(what, name string) error {
	if !validName(name, "") {
		return errkind.New(errkind.Invalid, "%s %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and - (no ':' and no non-ASCII characters)", what, name)
	}
	return nil
}

// CheckPolicyName validates an IoT policy name.
func CheckPolicyName(name string) error {
	if !validName(name, "+=,.@") {
		return errkind.New(errkind.Invalid, "policy name %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9 and _ + = , . @ -", name)
	}
	return nil
}
