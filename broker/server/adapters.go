package server

import (
	"context"

	"github.com/ggfleet/ggfleet/broker/cores"
	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
)

// coreCA tells enrollment which CA a core's provisioning used: the CA that
// issued the certificate already attached to the core's thing, so a
// device-made key is certified by the same authority as the broker-made one.
type coreCA struct {
	cores    *cores.Service
	provider provider.Provider
}

// CoreCA returns the id of the CA behind the core's first certificate, ""
// when it has none (enrollment then uses the default CA), or
// errkind.NotFound when the core does not exist.
func (c coreCA) CoreCA(ctx context.Context, name string) (string, error) {
	if err := c.cores.CoreExists(ctx, name); err != nil {
		return "", err
	}
	th, err := c.provider.DescribeThing(ctx, name)
	if errkind.Is(err, errkind.NotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, id := range th.Principals {
		cert, err := c.provider.DescribeCertificate(ctx, id)
		if err == nil && cert.CAID != "" {
			return cert.CAID, nil
		}
	}
	return "", nil
}
