// Package provisioning turns a provisioning template (an AWS IoT
// RegisterThing template plus CDF's "CDF" section) and parameters into a
// thing, its certificate and its policies, through the provider. It is the
// one "provision a thing" routine shared by core and device tasks, and it
// stores the provisioning templates themselves.
package provisioning

// Request asks for one thing to be provisioned.
type Request struct {
	// Template is the provisioning template's name.
	Template string
	// Parameters are the template's parameter values (provisioningParameters).
	Parameters map[string]string
	// CDF carries caId + certInfo, certificatePem + certificateStatus, or a CSR.
	CDF *CDFParameters
	// PlannedCertificate, when set, resumes a provisioning that a crash
	// interrupted: see Result.CertificateID.
	PlannedCertificate *Planned
	// ThingAbsent says the caller has just looked the thing up and found
	// none: Provision creates it without looking again (a read per thing
	// in bulk tasks). A thing made meanwhile after all fails the call with
	// errkind.Conflict and is left as it is.
	ThingAbsent bool
}

// CDFParameters are the cdfProvisioningParameters of a core or device.
type CDFParameters struct {
	CaID              string
	CertInfo          *CertInfo
	CertificatePem    string
	CertificateStatus string
	Csr               string
}

// CertInfo is the subject, lifetime and key algorithm of a broker-made certificate.
type CertInfo struct {
	CommonName, Organization, OrganizationalUnit, Locality, StateName, Country, EmailAddress string
	DaysExpiry                                                                               int
	KeyAlgorithm                                                                             string // "EC-P256" | "RSA-2048" | "" (the CA's default)
}

// Planned is the key and certificate made for a thing before any side
// effect, saved by the caller so that a re-run after a crash registers the
// same certificate instead of making a second one.
type Planned struct {
	CertificatePem string `json:"certificatePem"`
	PrivateKeyPem  string `json:"privateKeyPem,omitempty"`
	// CaCertificatePem is the issuing CA's certificate (added field; may be
	// empty in plans saved before it existed).
	CaCertificatePem string `json:"caCertificatePem,omitempty"`

	// origin is what Prepare made the plan from and with, in this process
	// (nil in plans restored after a crash): Provision reuses it.
	origin *planOrigin
}

// planOrigin is the template a plan was prepared with, the thing it was
// prepared for and the certificate and CA Prepare put in it.
type planOrigin struct {
	template       parsedTemplate
	thing          string
	certPEM, caPEM string
}

// Result is what provisioning made.
type Result struct {
	ThingName        string
	CertificateID    string // "" when the template has no certificate
	CertificatePem   string
	PrivateKeyPem    string // only when the broker (or AWS, createDeviceAWSCertificate) made the key
	CaCertificatePem string // the CA that issued the certificate, when known
	Policies         []string
}

// The Service in this package (service.go) provides, for core and device tasks:
//
//	// Prepare evaluates the template for req and, when the template asks the
//	// broker to make the device certificate (CDF.createDeviceCertificate),
//	// generates the key and certificate; nil when it does not. No side
//	// effects, except that CDF.createDeviceAWSCertificate has AWS make them.
//	Prepare(ctx context.Context, req Request) (*Planned, error)
//
//	// Provision applies the template through the provider: thing (attributes,
//	// type, groups), certificate (req.PlannedCertificate, a PEM, a CSR, or none),
//	// policies (existing by name, or created from a document), CDF post-steps;
//	// in aws mode (a ThingRegistrar provider) with one RegisterThing call.
//	// It is idempotent for a re-run with the same PlannedCertificate: a thing that
//	// already holds that certificate is adopted and finished. On an invalid
//	// template or parameters it returns an errkind.Invalid error whose message is
//	// the item's failure reason, and leaves nothing it made behind.
//	Provision(ctx context.Context, req Request) (Result, error)
