package main

import (
	"os"

	"github.com/prometheus/common/version"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
)

// pushrelayResource describes this process, the source of span metrics.
func pushrelayResource() *resource.Resource {
	attrs := []attribute.KeyValue{
		attribute.String("service.name", "pushrelay"),
		attribute.String("service.version", version.Version),
	}
	if host, err := os.Hostname(); err == nil {
		attrs = append(attrs, attribute.String("service.instance.id", host))
	}
	return resource.NewSchemaless(attrs...)
}
