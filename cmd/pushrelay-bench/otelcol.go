package main

// The reference (--spans-otelcol-bin) is an OpenTelemetry Collector whose
// pipeline is the OTLP receiver, the spanmetrics connector (same dimensions
// as pushrelay) and a nop exporter. It gets the same pre-encoded batches and
// is measured the same way: spans per CPU-second of its process in max-rate
// rounds that alternate with pushrelay's, so that both see the same machine,
// and the p99 at half of its maximum. bench/otelcol builds such a collector
// from the Go module proxy.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
)

// otelcolConfig is the collector configuration; %s is the gRPC endpoint and
// %s the dimension list.
const otelcolConfig = `receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
        max_recv_msg_size_mib: 64
connectors:
  span_metrics:
    dimensions: [%s]
exporters:
  nop:
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [span_metrics]
    metrics:
      receivers: [span_metrics]
      exporters: [nop]
`

// reference is a running collector and the sender of its batches.
type reference struct {
	p     *proc
	snd   *spanSender
	conns []*grpc.ClientConn
}

// startReference starts the collector at --spans-otelcol-bin, waits until
// it takes the first batch and warms it up like pushrelay.
func startReference(c *config, s *spanConfig, sizes []int, batches map[int][][]byte, res *spanResults) (*reference, error) {
	ref := &reference{}
	dir := filepath.Join(c.workDir, "otelcol")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, ref.fail(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var dims []string
	for _, d := range strings.Split(spanDimensions, ",") {
		dims = append(dims, "{name: "+d+"}")
	}
	cfg := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, otelcolConfig, addr, strings.Join(dims, ", ")), 0o644); err != nil {
		return nil, ref.fail(err)
	}
	if ref.p, err = launch("otelcol", s.otelcolBin, dir, []string{"--config=" + cfg}); err != nil {
		return nil, ref.fail(err)
	}
	res.Commands = append(res.Commands, strings.Join(ref.p.cmd.Args, " "))
	if ref.conns, err = dialSpanConns(addr, s.conns); err != nil {
		return nil, ref.fail(err)
	}
	err = ref.p.waitReady(60*time.Second, func() bool {
		return waitExport(ref.conns[0], batches[sizes[0]][0], 0) == nil
	})
	if err != nil {
		return nil, ref.fail(err)
	}
	ref.snd = newSpanSender(ref.conns, s.pdataClient, batches)
	if s.warmup > 0 {
		fmt.Fprintf(os.Stderr, "collector warm-up %s\n", s.warmup)
		ref.snd.maxRate(s.senders, sizes[len(sizes)-1], s.warmup, ref.p.pid())
	}
	return ref, nil
}

// fail releases what startReference set up and returns err.
func (ref *reference) fail(err error) error {
	ref.close(nil)
	return err
}

// close stops the collector, once; a problem is noted in res if not nil.
func (ref *reference) close(res *spanResults) {
	closeConns(ref.conns)
	ref.conns = nil
	if ref.p != nil {
		if err := ref.p.stop(30 * time.Second); err != nil && res != nil {
			res.note("collector: %v", err)
		}
		ref.p = nil
	}
}
