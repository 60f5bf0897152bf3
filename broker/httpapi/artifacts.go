package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// ArtifactService serves stored artifacts (certs.zip, installerConfig.yml)
// by key; *local.Provider satisfies it. Bad keys are errkind.Invalid,
// missing ones errkind.NotFound.
type ArtifactService interface {
	GetArtifact(ctx context.Context, key string) ([]byte, string, error)
}

// ArtifactPresigner is implemented by artifact stores that hand out
// short-lived download URLs (S3 in aws mode): GET then redirects there.
type ArtifactPresigner interface {
	PresignArtifact(ctx context.Context, key string, ttl time.Duration) (string, error)
}

// presignTTL is how long a redirect's presigned URL stays valid.
const presignTTL = 5 * time.Minute

func (a *API) getArtifact(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if ps, ok := a.d.Artifacts.(ArtifactPresigner); ok && r.Method == http.MethodGet {
		url, err := ps.PresignArtifact(r.Context(), key, presignTTL)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, url, http.StatusTemporaryRedirect)
		return
	}
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
