// Package traces receives spans over OTLP gRPC, OTLP HTTP (protobuf and
// JSON) and Zipkin v2 JSON, and hands every batch, normalised to the OTLP
// data model (ptrace.Traces), to one Consumer.
//
// Decoding uses the OpenTelemetry Collector's pdata for OTLP and zipkin-go's
// model for Zipkin; the Zipkin-to-OTLP mapping follows the Collector's
// Zipkin receiver (see ZipkinToTraces).
//
// # Caveats
//
// Receivers answer only after the Consumer returned, so a client that gets
// a success knows its spans were counted. A body that cannot be decoded is
// answered 400 with the decoder's message and nothing of it is counted; a
// body over the size limit is answered 413.
package traces
