package packaging

import (
	"strings"
	"testing"
)

func TestRenderInstallScript(t *testing.T) {
	s, err := RenderInstallScript("https://b.example:8443/", "00ff", "PEM\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"broker='https://b.example:8443'\n", "ca_sha256='00ff'\n", "ca_pem='PEM'\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("rendered script lacks %q", want)
		}
	}
	if strings.Contains(s, "'@GGFLEET_") {
		t.Error("placeholders left in the rendered script")
	}
	for _, c := range []struct{ name, url, sum, pem string }{
		{"quote in URL", "https://b'; rm -rf /; '", "", ""},
		{"not a URL", "b.example", "", ""},
		{"upper-case hex", "https://b", "00FF", ""},
		{"not hex", "https://b", "x';", ""},
		{"quote in PEM", "https://b", "", "'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := RenderInstallScript(c.url, c.sum, c.pem); err == nil {
				t.Error("accepted")
			}
		})
	}
}
