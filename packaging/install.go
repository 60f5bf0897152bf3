package packaging

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
)

// InstallScript is packaging/install.sh, the POSIX sh installer the broker
// serves as GET /install.sh, with its placeholders unfilled (see
// RenderInstallScript).
//
//go:embed install.sh
var InstallScript string

// The placeholders of InstallScript, each inside single quotes.
const (
	installBrokerURL = "@GGFLEET_BROKER_URL@"
	installCASHA256  = "@GGFLEET_CA_SHA256@"
	installCAPEM     = "@GGFLEET_CA_PEM@"
)

// RenderInstallScript fills InstallScript in for a broker: the URL devices
// reach it at, the hex SHA-256 of its CA certificate (what
// `ggagent install --ca-sha256` pins; "" when its TLS certificate is not
// from its own CA) and that CA's PEM certificate, which the script trusts
// for its downloads ("" trusts the system's roots). Values that could
// break out of the script's single quotes are refused.
func RenderInstallScript(brokerURL, caSHA256, caPEM string) (string, error) {
	if !strings.HasPrefix(brokerURL, "http://") && !strings.HasPrefix(brokerURL, "https://") {
		return "", fmt.Errorf("render install.sh: broker URL %q: want http(s)://host[:port]", brokerURL)
	}
	if strings.ContainsAny(brokerURL, "'\n\\ ") {
		return "", fmt.Errorf("render install.sh: broker URL %q holds a quote, backslash, space or newline", brokerURL)
	}
	for _, c := range caSHA256 {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return "", fmt.Errorf("render install.sh: CA SHA-256 %q: want lowercase hex", caSHA256)
		}
	}
	if strings.Contains(caPEM, "'") {
		return "", errors.New("render install.sh: the CA PEM holds a single quote")
	}
	s := InstallScript
	for _, r := range []struct{ placeholder, value string }{
		{installBrokerURL, strings.TrimRight(brokerURL, "/")},
		{installCASHA256, caSHA256},
		{installCAPEM, strings.TrimSpace(caPEM)},
	} {
		quoted := "'" + r.placeholder + "'"
		if strings.Count(s, quoted) != 1 {
			return "", fmt.Errorf("render install.sh: placeholder %s is not in the script exactly once", r.placeholder)
		}
		s = strings.Replace(s, quoted, "'"+r.value+"'", 1)
	}
	return s, nil
}
