package thingflow

import (
	"archive/zip"
	"bytes"
	"testing"
)

func TestCertsZipLayout(t *testing.T) {
	tests := []struct {
		name           string
		key, ca        string
		want, wantNone []string
	}{
		{"broker key and CA", "KEY", "CA", []string{"certs/", "certs/cert.pem", "certs/private.key", "certs/root.ca.pem"}, nil},
		{"no key", "", "CA", []string{"certs/", "certs/cert.pem", "certs/root.ca.pem"}, []string{"certs/private.key"}},
		{"cert only", "", "", []string{"certs/", "certs/cert.pem"}, []string{"certs/private.key", "certs/root.ca.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := CertsZip("CERT", tt.key, tt.ca)
			if err != nil {
				t.Fatal(err)
			}
			zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range zr.File {
				names = append(names, f.Name)
			}
			if len(names) != len(tt.want) {
				t.Fatalf("entries = %v, want %v", names, tt.want)
			}
			for i := range names {
				if names[i] != tt.want[i] {
					t.Fatalf("entries = %v, want %v", names, tt.want)
				}
			}
			files, err := ReadZip(data)
			if err != nil || files["certs/cert.pem"] != "CERT" || files["certs/private.key"] != tt.key {
				t.Fatalf("ReadZip = %v, %v", files, err)
			}
		})
	}
}
