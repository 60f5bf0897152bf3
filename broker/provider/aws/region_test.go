package aws_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	awsprov "github.com/ggfleet/ggfleet/broker/provider/aws"
	"github.com/ggfleet/ggfleet/broker/provider/aws/awsfake"
)

// keyRecorder records the access key id of every signed request.
type keyRecorder struct {
	mu   sync.Mutex
	keys []string
}

var credentialRE = regexp.MustCompile(`Credential=([A-Z0-9]+)/`)

func (k *keyRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	if m := credentialRE.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		k.mu.Lock()
		k.keys = append(k.keys, m[1])
		k.mu.Unlock()
	}
	return http.DefaultTransport.RoundTrip(r)
}

func (k *keyRecorder) last() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.keys) == 0 {
		return ""
	}
	return k.keys[len(k.keys)-1]
}

// TestRegionAndCredentialsFromTheSDKChain: without Config.Region and
// Config.Credentials the provider takes both the standard SDK way, from
// the environment or the shared config's profile, and fails clearly
// without a region.
func TestRegionAndCredentialsFromTheSDKChain(t *testing.T) {
	fake := awsfake.New(t)
	fake.CreateBucket(testBucket)
	tests := []struct {
		name       string
		flag       string            // Config.Region (--aws-region)
		env        map[string]string // besides a clean environment
		config     string            // shared config file
		creds      string            // shared credentials file
		wantRegion string
		wantKey    string
		wantErr    string
	}{
		{name: "environment", env: map[string]string{"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "s"},
			wantRegion: "eu-west-1", wantKey: "AKIDENV"},
		{name: "AWS_DEFAULT_REGION", env: map[string]string{"AWS_DEFAULT_REGION": "ap-south-1", "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "s"},
			wantRegion: "ap-south-1", wantKey: "AKIDENV"},
		{name: "the flag wins over the environment", flag: "us-west-2", env: map[string]string{"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "s"},
			wantRegion: "us-west-2", wantKey: "AKIDENV"},
		{name: "shared config profile", env: map[string]string{"AWS_PROFILE": "fleet"},
			config: "[profile fleet]\nregion = eu-central-1\n", creds: "[fleet]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s\n",
			wantRegion: "eu-central-1", wantKey: "AKIDPROFILE"},
		{name: "no region anywhere", env: map[string]string{"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "s"},
			wantErr: "no AWS region"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
				"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CA_BUNDLE"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
			t.Setenv("AWS_CONFIG_FILE", writeTemp(t, dir, "config", tt.config))
			t.Setenv("AWS_SHARED_CREDENTIALS_FILE", writeTemp(t, dir, "credentials", tt.creds))
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			rec := &keyRecorder{}
			p, err := awsprov.New(context.Background(), awsprov.Config{Region: tt.flag, EndpointURL: fake.URL(), ArtifactsBucket: testBucket,
				HTTPClient: &http.Client{Transport: rec}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Region() != tt.wantRegion {
				t.Fatalf("Region = %q, want %q", p.Region(), tt.wantRegion)
			}
			if _, err := p.DescribeEndpoints(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := rec.last(); got != tt.wantKey {
				t.Fatalf("requests signed with %q, want %q", got, tt.wantKey)
			}
		})
	}
}

func writeTemp(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
