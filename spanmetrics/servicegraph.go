package spanmetrics

import (
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"google.golang.org/protobuf/proto"
)

// Service graph metric names.
const (
	graphRequestTotal  = "traces_service_graph_request_total"
	graphFailedTotal   = "traces_service_graph_request_failed_total"
	graphServerSeconds = "traces_service_graph_request_server_seconds"
	graphClientSeconds = "traces_service_graph_request_client_seconds"
)

var graphHelps = map[string]string{
	graphRequestTotal:  "Requests between two nodes of the service graph.",
	graphFailedTotal:   "Failed requests between two nodes of the service graph.",
	graphServerSeconds: "Time for a request between two nodes as seen from the server.",
	graphClientSeconds: "Time for a request between two nodes as seen from the client.",
}

// Values of the connection_type and virtual_node labels.
const (
	connMessaging   = "messaging_system"
	connDatabase    = "database"
	connVirtualNode = "virtual_node"
	virtualClient   = "client"
	virtualServer   = "server"
	userNode        = "user"
)

// Results of an edge that expired unpaired.
const (
	expiredVirtual = "virtual_node"
	expiredDropped = "dropped"
)

// edgeKey identifies an edge by trace id and the client span's id.
type edgeKey [24]byte

func newEdgeKey(tid pcommon.TraceID, sid pcommon.SpanID) edgeKey {
	var k edgeKey
	copy(k[:16], tid[:])
	copy(k[16:], sid[:])
	return k
}

// edge is a request between two services, waiting for both its sides.
type edge struct {
	key                          edgeKey
	clientService, serverService string
	clientLatency, serverLatency float64
	hasClient, hasServer         bool
	failed                       bool
	connType                     string
	clientDims, serverDims       []string
	rootServer                   bool
	clientPeer, serverPeer       string
	mult                         float64
	expires                      time.Time
	done                         bool
}

// graphSeries holds the metrics of one edge label set.
type graphSeries struct {
	values                 []string
	next                   *graphSeries
	requests, failed       float64
	hasFailed              bool
	server, client         []float64
	serverCount, serverSum float64
	clientCount, clientSum float64
	updated                time.Time
}

// serviceGraph pairs client and server spans into edges. All its methods
// must be called holding the processor's lock.
type serviceGraph struct {
	cfg     *ServiceGraphConfig
	p       *Processor
	pending map[edgeKey]*edge
	// queue holds pending edges in arrival order, so expiry pops from its
	// head.
	queue  []*edge
	series map[uint64]*graphSeries
	labels []string
	values []string
	// Numbers of the span attributes the graph looks up, in the
	// processor's key index.
	dbKeys, peerKeys, dimKeys                                       []int
	peerService, serverAddress, networkPeerAddress, networkPeerPort int
}

func newServiceGraph(cfg *ServiceGraphConfig, p *Processor) *serviceGraph {
	g := &serviceGraph{cfg: cfg, p: p, pending: map[edgeKey]*edge{}, series: map[uint64]*graphSeries{}}
	g.labels = []string{"client", "server", "connection_type"}
	if cfg.EnableVirtualNodeLabel {
		g.labels = append(g.labels, "virtual_node")
	}
	for _, d := range cfg.Dimensions {
		if cfg.EnableClientServerPrefix {
			g.labels = append(g.labels, "client_"+SanitizeLabelName(d), "server_"+SanitizeLabelName(d))
		} else {
			g.labels = append(g.labels, SanitizeLabelName(d))
		}
	}
	g.values = make([]string, len(g.labels))
	if cfg.Disabled {
		return g
	}
	keys := &p.keys
	g.dbKeys = keys.addAll(cfg.DatabaseNameAttributes)
	g.peerKeys = keys.addAll(cfg.PeerAttributes)
	g.dimKeys = keys.addAll(cfg.Dimensions)
	g.peerService = keys.add("peer.service")
	g.serverAddress = keys.add("server.address")
	g.networkPeerAddress = keys.add("network.peer.address")
	g.networkPeerPort = keys.add("network.peer.port")
	return g
}

// graphResource is what the graph looks up on a resource once for all its
// spans.
type graphResource struct {
	// dbName is the first database-name attribute of the resource.
	dbName string
	hasDB  bool
	dims   []resourceDim
}

// resource looks up the database-name attributes and the dimensions of a
// resource.
func (g *serviceGraph) resource(res pcommon.Map) graphResource {
	var r graphResource
	r.dbName, r.hasDB = firstPresent(g.cfg.DatabaseNameAttributes, res)
	if len(g.cfg.Dimensions) > 0 {
		r.dims = make([]resourceDim, len(g.cfg.Dimensions))
		for i, d := range g.cfg.Dimensions {
			r.dims[i].value, r.dims[i].present = lookup(d, res)
		}
	}
	return r
}

// graphSpan is what the graph needs of one client or server span.
type graphSpan struct {
	// ok is set for client and server spans of a named service.
	ok       bool
	kind     ptrace.SpanKind
	service  string
	latency  float64
	failed   bool
	key      edgeKey
	root     bool
	database bool
	// server names the server of a database call.
	server string
	peer   string
	dims   []string
	mult   float64
}

// prepare fills gs with what the graph needs of a span of service, whose
// looked-up attributes are attrs. It reads only the span and the
// configuration, so it needs no lock.
func (g *serviceGraph) prepare(gs *graphSpan, res *graphResource, attrs *spanAttrs, span ptrace.Span, service string, mult float64) {
	kind := span.Kind()
	switch kind {
	case ptrace.SpanKindClient, ptrace.SpanKindProducer, ptrace.SpanKindServer, ptrace.SpanKindConsumer:
	default:
		return
	}
	*gs = graphSpan{
		ok: true, kind: kind, service: service, latency: latency(span),
		failed: span.Status().Code() == ptrace.StatusCodeError, mult: mult,
	}
	if kind == ptrace.SpanKindServer || kind == ptrace.SpanKindConsumer {
		gs.key = newEdgeKey(span.TraceID(), span.ParentSpanID())
		gs.root = span.ParentSpanID().IsEmpty()
	} else {
		dbName, ok := res.dbName, res.hasDB
		if !ok {
			dbName, ok = attrs.first(g.dbKeys)
		}
		if ok {
			gs.database = true
			gs.server = g.databaseServer(attrs, dbName)
			gs.dims = g.dims(res, attrs)
			return
		}
		gs.key = newEdgeKey(span.TraceID(), span.SpanID())
	}
	gs.dims = g.dims(res, attrs)
	gs.peer, _ = attrs.first(g.peerKeys)
}

// consume adds one prepared span to the graph.
func (g *serviceGraph) consume(gs *graphSpan, now time.Time) {
	if gs.database {
		g.complete(&edge{
			clientService: gs.service, serverService: gs.server,
			clientLatency: gs.latency, serverLatency: gs.latency, failed: gs.failed, connType: connDatabase,
			clientDims: gs.dims, serverDims: gs.dims, mult: gs.mult,
		}, "", now)
		return
	}
	e := g.edge(gs.key, now)
	if e == nil {
		return
	}
	e.failed = e.failed || gs.failed
	e.connType = connectionType(gs.kind)
	switch gs.kind {
	case ptrace.SpanKindClient, ptrace.SpanKindProducer:
		e.clientService, e.clientLatency, e.hasClient = gs.service, gs.latency, true
		e.clientDims = gs.dims
		e.clientPeer = gs.peer
		e.mult = gs.mult
	default:
		e.serverService, e.serverLatency, e.hasServer = gs.service, gs.latency, true
		e.serverDims = gs.dims
		e.rootServer = gs.root
		e.serverPeer = gs.peer
		if !e.hasClient {
			e.mult = gs.mult
		}
	}
	g.tryComplete(e, now)
}

func connectionType(k ptrace.SpanKind) string {
	if k == ptrace.SpanKindProducer || k == ptrace.SpanKindConsumer {
		return connMessaging
	}
	return ""
}

// databaseServer names the server node of a database call.
func (g *serviceGraph) databaseServer(attrs *spanAttrs, dbName string) string {
	if v, ok := attrs.get(g.peerService); ok && v != "" {
		return v
	}
	if v, ok := attrs.get(g.serverAddress); ok && v != "" {
		return v
	}
	if v, ok := attrs.get(g.networkPeerAddress); ok && v != "" {
		if port, ok := attrs.get(g.networkPeerPort); ok && port != "" {
			return v + ":" + port
		}
		return v
	}
	return dbName
}

// firstPresent returns the value of the first key present in any of the
// maps, searched map by map.
func firstPresent(keys []string, maps ...pcommon.Map) (string, bool) {
	for _, m := range maps {
		for _, k := range keys {
			if v, ok := m.Get(k); ok {
				return stringify(v), true
			}
		}
	}
	return "", false
}

// dims looks up the configured dimensions, resource first.
func (g *serviceGraph) dims(res *graphResource, attrs *spanAttrs) []string {
	if len(g.dimKeys) == 0 {
		return nil
	}
	out := make([]string, len(g.dimKeys))
	for i, key := range g.dimKeys {
		if rd := res.dims[i]; rd.present {
			out[i] = rd.value
		} else {
			out[i], _ = attrs.get(key)
		}
	}
	return out
}

// edge returns the pending edge of key, creating it when there is room.
func (g *serviceGraph) edge(key edgeKey, now time.Time) *edge {
	if e := g.pending[key]; e != nil {
		return e
	}
	if len(g.pending) >= g.cfg.MaxItems {
		g.p.self.graphDropped.Inc()
		return nil
	}
	e := &edge{key: key, expires: now.Add(g.cfg.Wait), mult: 1}
	g.pending[key] = e
	g.queue = append(g.queue, e)
	return e
}

func (g *serviceGraph) tryComplete(e *edge, now time.Time) {
	if e.hasClient && e.hasServer {
		delete(g.pending, e.key)
		e.done = true
		g.complete(e, "", now)
	}
}

// expire turns edges that waited long enough into virtual edges or drops
// them.
func (g *serviceGraph) expire(now time.Time) {
	n := 0
	for n < len(g.queue) && (g.queue[n].done || !g.queue[n].expires.After(now)) {
		e := g.queue[n]
		n++
		if e.done {
			continue
		}
		delete(g.pending, e.key)
		switch {
		case e.hasServer && !e.hasClient && e.rootServer:
			e.clientService = userNode
			if e.serverPeer != "" {
				e.clientService = e.serverPeer
			}
			e.connType = connVirtualNode
			g.complete(e, virtualClient, now)
			g.p.self.graphExpired.WithLabelValues(expiredVirtual).Inc()
		case e.hasClient && !e.hasServer && e.clientPeer != "":
			e.serverService = e.clientPeer
			e.connType = connVirtualNode
			g.complete(e, virtualServer, now)
			g.p.self.graphExpired.WithLabelValues(expiredVirtual).Inc()
		default:
			g.p.self.graphExpired.WithLabelValues(expiredDropped).Inc()
		}
	}
	clear(g.queue[:n])
	g.queue = g.queue[n:]
}

// complete records a finished edge; virtual names the side that is a
// virtual node, if any.
func (g *serviceGraph) complete(e *edge, virtual string, now time.Time) {
	v := g.values
	v[0], v[1], v[2] = e.clientService, e.serverService, e.connType
	slot := 3
	if g.cfg.EnableVirtualNodeLabel {
		v[slot] = virtual
		slot++
	}
	for i := range g.cfg.Dimensions {
		client, server := dimAt(e.clientDims, i), dimAt(e.serverDims, i)
		if g.cfg.EnableClientServerPrefix {
			v[slot], v[slot+1] = client, server
			slot += 2
			continue
		}
		v[slot] = client
		if server != "" {
			v[slot] = server
		}
		slot++
	}
	for i := range v {
		v[i] = truncate(v[i], maxLabelValueLength)
	}
	s := g.lookupSeries(v, now)
	if s == nil {
		return
	}
	s.requests += e.mult
	if e.failed {
		s.failed += e.mult
		s.hasFailed = true
	}
	bounds := g.cfg.HistogramBuckets
	s.server[sort.SearchFloat64s(bounds, e.serverLatency)] += e.mult
	s.serverCount += e.mult
	s.serverSum += e.serverLatency * e.mult
	s.client[sort.SearchFloat64s(bounds, e.clientLatency)] += e.mult
	s.clientCount += e.mult
	s.clientSum += e.clientLatency * e.mult
	s.updated = now
}

func dimAt(d []string, i int) string {
	if i < len(d) {
		return d[i]
	}
	return ""
}

func (g *serviceGraph) lookupSeries(v []string, now time.Time) *graphSeries {
	h := hashValues(v)
	head := g.series[h]
	for s := head; s != nil; s = s.next {
		if equalValues(s.values, v) {
			return s
		}
	}
	if !g.p.admitSeries(v) {
		return nil
	}
	n := len(g.cfg.HistogramBuckets) + 1
	s := &graphSeries{values: cloneValues(v), next: head, server: make([]float64, n), client: make([]float64, n), updated: now}
	g.series[h] = s
	return s
}

// removeStale drops series not updated since cutoff.
func (g *serviceGraph) removeStale(cutoff time.Time) {
	for h, head := range g.series {
		var kept *graphSeries
		for s := head; s != nil; {
			next := s.next
			if s.updated.Before(cutoff) {
				g.p.active--
			} else {
				s.next = kept
				kept = s
			}
			s = next
		}
		if kept == nil {
			delete(g.series, h)
		} else {
			g.series[h] = kept
		}
	}
}

func (g *serviceGraph) collect(ch chan<- prometheus.Metric) {
	descs := g.p.descs
	for _, head := range g.series {
		for s := head; s != nil; s = s.next {
			labels := labelPairs(g.labels, s.values)
			ch <- constMetric(descs[graphRequestTotal], &dto.Metric{Label: labels, Counter: &dto.Counter{Value: proto.Float64(s.requests)}})
			if s.hasFailed {
				ch <- constMetric(descs[graphFailedTotal], &dto.Metric{Label: labels, Counter: &dto.Counter{Value: proto.Float64(s.failed)}})
			}
			ch <- constMetric(descs[graphServerSeconds], &dto.Metric{Label: labels, Histogram: histogram(g.cfg.HistogramBuckets, s.server, s.serverCount, s.serverSum, nil)})
			ch <- constMetric(descs[graphClientSeconds], &dto.Metric{Label: labels, Histogram: histogram(g.cfg.HistogramBuckets, s.client, s.clientCount, s.clientSum, nil)})
		}
	}
}
