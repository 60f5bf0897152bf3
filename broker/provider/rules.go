package provider

import (
	"regexp"

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

// Names every provider enforces: thing, core, device and group names follow
// DESIGN.md (stricter than AWS: no ':'), policy names AWS IoT's pattern.
var (
	nameRE       = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,128}$`)
	policyNameRE = regexp.MustCompile(`^[\w+=,.@-]{1,128}$`)
)

// CheckName validates a thing or thing-group name; what names it in the
// message ("thing name", "thing group name").
func CheckName(what, name string) error {
	if !nameRE.MatchString(name) {
		return errkind.New(errkind.Invalid, "%s %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9, _ and - (no ':' and no non-ASCII characters)", what, name)
	}
	return nil
}

// CheckPolicyName validates an IoT policy name.
func CheckPolicyName(name string) error {
	if !policyNameRE.MatchString(name) {
		return errkind.New(errkind.Invalid, "policy name %q is not valid: use 1 to 128 characters from a-z, A-Z, 0-9 and _ + = , . @ -", name)
	}
	return nil
}
