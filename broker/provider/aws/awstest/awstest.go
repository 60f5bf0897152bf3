// Package awstest starts an aws provider on the in-repo AWS fake for tests
// in other packages (server, mqttbus/external, the provider's own), so each
// does not repeat how to keep the SDK away from the machine's AWS
// configuration.
package awstest

import (
	"context"
	"crypto/rand"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ggfleet/ggfleet/broker/ca"
	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
	"github.com/ggfleet/ggfleet/broker/sqlstore"
	"github.com/ggfleet/ggfleet/broker/sqlstore/sqlstoretest"
)

// Credentials are the static credentials tests sign with.
var Credentials = credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")

// IsolateSDK keeps the SDK from reading the machine's AWS configuration,
// shared credentials and instance metadata for the rest of the test.
func IsolateSDK(t *testing.T) {
	t.Helper()
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/credentials")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// NewProvider starts a fake and an aws provider talking to it, in the
// fake's region with Credentials and the artifacts bucket "unused"; mod, if
// not nil, changes the configuration first.
func NewProvider(t *testing.T, mod func(*awsprov.Config)) (*awsprov.Provider, *awsfake.Fake) {
	t.Helper()
	IsolateSDK(t)
	fake := awsfake.New(t)
	cfg := awsprov.Config{Region: awsfake.Region, EndpointURL: fake.URL(), ArtifactsBucket: "unused", Credentials: Credentials}
	if mod != nil {
		mod(&cfg)
	}
	p, err := awsprov.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("aws provider on the fake: %v", err)
	}
	return p, fake
}

// Broker is what the broker keeps for its AWS side in the tests that need
// more than the provider: a fresh SQLite database (migrated) and a CA
// authority initialised on it with a random secrets key.
type Broker struct {
	DB         *sqlstore.DB
	Authority  *ca.Authority
	Default    ca.CA // the authority's default CA, made by Init
	SecretsKey []byte
}

// NewBroker makes a Broker in t's temporary directory, closed when t ends.
func NewBroker(t *testing.T) Broker {
	t.Helper()
	ctx := context.Background()
	db := sqlstoretest.Open(t)
	key := make([]byte, ca.SecretsKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	authority := ca.New(ca.Config{Store: db, SecretsKey: key})
	def, _, err := authority.Init(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return Broker{DB: db, Authority: authority, Default: def, SecretsKey: key}
}
