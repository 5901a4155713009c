package traces

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// protoUnmarshaler is implemented by pdata's OTLP messages, among them the
// export request the OTLP TraceService receives.
type protoUnmarshaler interface {
	UnmarshalProto(buf []byte) error
}

// grpcCodec decodes OTLP messages with pdata's own unmarshaller, like the
// "proto" codec pdata registers, but joins a request that arrived in
// several buffers into a pooled buffer of about its size that is not zeroed
// first: pdata's codec takes the next size of a coarse tier list (a
// 512 KiB buffer for a 48 KiB request) and zeroes all of it. Everything
// else goes to the registered "proto" codec.
type grpcCodec struct {
	fallback encoding.CodecV2
}

func newGRPCCodec() grpcCodec {
	return grpcCodec{fallback: encoding.GetCodecV2("proto")}
}

func (c grpcCodec) Name() string { return c.fallback.Name() }

func (c grpcCodec) Marshal(v any) (mem.BufferSlice, error) { return c.fallback.Marshal(v) }

func (c grpcCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(protoUnmarshaler)
	if !ok {
		return c.fallback.Unmarshal(data, v)
	}
	switch {
	case data.Len() == 0:
		return m.UnmarshalProto(nil)
	case len(data) == 1:
		return m.UnmarshalProto(data[0].ReadOnlyData())
	}
	buf := getJoinBuffer(data.Len())
	defer putJoinBuffer(buf)
	data.CopyTo(*buf)
	return m.UnmarshalProto(*buf)
}

// joinBuffers pools the buffers requests are joined in, by capacity: pool
// i holds buffers of 2^i bytes. pdata copies every string and byte field it
// decodes, so a buffer is free again once UnmarshalProto returned.
var joinBuffers [bits.UintSize]sync.Pool

// getJoinBuffer returns a buffer of length n whose contents are undefined.
func getJoinBuffer(n int) *[]byte {
	class := bits.Len(uint(n - 1))
	if b, ok := joinBuffers[class].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<class)
	return &b
}

func putJoinBuffer(b *[]byte) {
	joinBuffers[bits.Len(uint(cap(*b)-1))].Put(b)
}
