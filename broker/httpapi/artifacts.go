package httpapi

import (
	"context"
	"net/http"
	"strconv"
)

// ArtifactService serves stored artifacts (certs.zip, installerConfig.yml)
// by key; *local.Provider satisfies it. Bad keys are errkind.Invalid,
// missing ones errkind.NotFound.
type ArtifactService interface {
	GetArtifact(ctx context.Context, key string) ([]byte, string, error)
}

func (a *API) getArtifact(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	data, contentType, err := a.d.Artifacts.GetArtifact(r.Context(), key)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(data)))
	h.Set("X-Content-Type-Options", "nosniff")
	// certs.zip holds a private key: keep it out of shared caches.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(data)
	}
}
