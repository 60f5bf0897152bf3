package aws

import (
	"bytes"
	"context"
	"fmt"
	"io"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ggfleet/ggfleet/broker/provider/local"
)

// PutArtifact stores data in the artifacts bucket under prefix+key and
// returns the bucket name. Keys follow the same rule as the local provider.
func (p *Provider) PutArtifact(ctx context.Context, key, contentType string, data []byte) (string, error) {
	if err := local.CheckArtifactKey(key); err != nil {
		return "", err
	}
	full := p.prefix + key
	_, err := p.s3.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &p.bucket, Key: &full, Body: bytes.NewReader(data),
		ContentType: &contentType, ContentLength: sdkaws.Int64(int64(len(data))),
	})
	if err != nil {
		return "", mapErr(err, "put artifact s3://%s/%s", p.bucket, full)
	}
	return p.bucket, nil
}

// GetArtifact returns an artifact's bytes and content type, or
// errkind.NotFound.
func (p *Provider) GetArtifact(ctx context.Context, key string) ([]byte, string, error) {
	if err := local.CheckArtifactKey(key); err != nil {
		return nil, "", err
	}
	full := p.prefix + key
	out, err := p.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &p.bucket, Key: &full})
	if err != nil {
		return nil, "", mapErr(err, "get artifact s3://%s/%s", p.bucket, full)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, "", fmt.Errorf("read artifact s3://%s/%s: %w", p.bucket, full, err)
	}
	return data, sdkaws.ToString(out.ContentType), nil
}
