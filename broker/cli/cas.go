package cli

import (
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/ggfleet/ggfleet/shared/cdf"
	"github.com/spf13/pflag"
)

// caResource is a certificate authority as the broker shows it.
type caResource struct {
	CAID           string   `json:"caId"`
	Subject        string   `json:"subject"`
	NotAfter       cdf.Time `json:"notAfter"`
	Default        bool     `json:"default"`
	KeyAlgorithm   string   `json:"keyAlgorithm"`
	CertificatePem string   `json:"certificatePem"`
}

func caDetail(w io.Writer, a caResource) {
	def := "no"
	if a.Default {
		def = "yes"
	}
	fields(w, [][2]string{{"CA ID (SHA-256)", a.CAID}, {"Subject", a.Subject}, {"Key", a.KeyAlgorithm}, {"Not after", ts(a.NotAfter)}, {"Default", def}})
}

// caCommands create or import certificate authorities.
func caCommands() []subcommand {
	return []subcommand{
		{name: "cas create", args: "--common-name CN [--days N] [--key-algorithm EC-P256|RSA-2048]", summary: "Generate a new certificate authority on the broker (its key never leaves it)",
			setup: func(fs *pflag.FlagSet) runFunc {
				cn := fs.String("common-name", "", "subject common name of the CA certificate (required)")
				days := fs.Int("days", 0, "validity in days (default: the broker's)")
				alg := fs.String("key-algorithm", "", "EC-P256 or RSA-2048 (default: the broker's)")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					if *cn == "" {
						return usagef("--common-name is required")
					}
					body := map[string]any{"commonName": *cn}
					if *days != 0 {
						if *days < 0 {
							return usagef("--days must be at least 1")
						}
						body["daysExpiry"] = *days
					}
					if *alg != "" {
						body["keyAlgorithm"] = *alg
					}
					return createCA(c, body)
				}
			}},
		{name: "cas import", args: "--cert FILE --key FILE", summary: "Import a certificate authority (PEM certificate and private key); the broker stores the key encrypted",
			setup: func(fs *pflag.FlagSet) runFunc {
				cert := fs.String("cert", "", "PEM file of the CA certificate (required)")
				key := fs.String("key", "", "PEM file of the CA's private key (required)")
				return func(c *cmdCtx, args []string) error {
					if err := needArgs(args, 0, "no arguments"); err != nil {
						return err
					}
					if *cert == "" || *key == "" {
						return usagef("--cert and --key are required")
					}
					certPEM, err := os.ReadFile(*cert)
					if err != nil {
						return usagef("--cert: %v", err)
					}
					keyPEM, err := os.ReadFile(*key)
					if err != nil {
						return usagef("--key: %v", err)
					}
					return createCA(c, map[string]any{"certificatePem": string(certPEM), "privateKeyPem": string(keyPEM)})
				}
			}},
	}
}

func createCA(c *cmdCtx, body map[string]any) error {
	var a caResource
	if err := c.api.Do(c.ctx, http.MethodPost, "/certificateAuthorities", body, &a); err != nil {
		return fmt.Errorf("create certificate authority: %w", err)
	}
	return emit(c, a, func(w io.Writer) { caDetail(w, a) })
}
