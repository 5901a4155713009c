# pushrelay container image.
#
#   docker build -t pushrelay .
#   docker run -p 9091:9091 -p 4317:4317 -p 4318:4318 -p 9411:9411 -v pushrelay-data:/data pushrelay
#
# Build arguments: VERSION (default: the VERSION file), REVISION and BRANCH
# (default: unknown; e.g. --build-arg REVISION=$(git rev-parse --short HEAD)),
# GO_VERSION and ALPINE_VERSION for the base images.

ARG GO_VERSION=1.26
ARG ALPINE_VERSION=3.22

FROM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
# Dependencies first, so that source changes reuse the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=
ARG REVISION=unknown
ARG BRANCH=unknown
# A static binary with the version ldflags of the Makefile. -buildvcs=false:
# the image has no git to stamp VCS information with.
RUN VERSION="${VERSION:-$(cat VERSION 2>/dev/null || echo 0.1.0)}" && \
    CGO_ENABLED=0 go build -buildvcs=false -trimpath \
      -ldflags "-s -w \
        -X github.com/prometheus/common/version.Version=${VERSION} \
        -X github.com/prometheus/common/version.Revision=${REVISION} \
        -X github.com/prometheus/common/version.Branch=${BRANCH}" \
      -o /out/pushrelay ./cmd/pushrelay && \
    /out/pushrelay --version

# Alpine rather than distroless: its busybox wget runs the HEALTHCHECK.
FROM alpine:${ALPINE_VERSION}
RUN apk add --no-cache ca-certificates && \
    addgroup -S -g 65532 pushrelay && \
    adduser -S -D -H -u 65532 -G pushrelay -h /data -s /sbin/nologin pushrelay && \
    mkdir -p /data && chown pushrelay:pushrelay /data
COPY --from=build /out/pushrelay /usr/local/bin/pushrelay
# A new named volume mounted at /data is initialised from the image, so it
# is owned by the pushrelay user too.
VOLUME /data
WORKDIR /data
USER 65532:65532
# Push API and /metrics, OTLP gRPC, OTLP HTTP, Zipkin.
EXPOSE 9091 4317 4318 9411
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD wget -q -T 4 -O /dev/null http://127.0.0.1:9091/-/healthy || exit 1
ENTRYPOINT ["/usr/local/bin/pushrelay"]
CMD ["--persistence.file=/data/pushrelay.db"]
