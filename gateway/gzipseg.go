package gateway

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/flate"
)

// A scrape body in gzip is one gzip member whose deflate stream is a
// concatenation of segments. Each segment is compressed on its own by a
// fresh raw deflate writer and ended with a sync flush: it refers to no
// earlier bytes, ends on a byte boundary and has no final block, so any
// sequence of segments followed by one final empty block is a valid
// deflate stream. Cached chunks, alone or with the chunks after them,
// keep their segment with the CRC-32 and length of their plain bytes, from
// which the member's trailer is combined without reading the plain bytes
// again.

var (
	// gzipHeader starts a gzip member: no name, no time, the extra flags
	// of the fastest level (4) and an unknown OS (255), as the gzip
	// writer at BestSpeed writes.
	gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255}
	// finalBlock is an empty final deflate block with fixed codes.
	finalBlock = []byte{0x03, 0x00}
)

// flateWriters keeps the raw deflate writers of two concurrent compressed
// scrapes, each using up to three: its own, its helper's and its body's.
var flateWriters = newFreeList(6, func() *flate.Writer {
	w, _ := flate.NewWriter(nil, flate.BestSpeed)
	return w
})

// appendSegment appends the raw deflate segment of plain to dst, using
// fw, which it resets.
func appendSegment(dst *bytes.Buffer, fw *flate.Writer, plain []byte) {
	fw.Reset(dst)
	// Writes to a bytes.Buffer do not fail.
	_, _ = fw.Write(plain)
	_ = fw.Flush()
}

// bodyWriter assembles a scrape body, plain or as one gzip member, from
// bytes rendered during the scrape and cached renderings. Output is
// handed to w in pieces of about flushAt bytes.
type bodyWriter struct {
	w    io.Writer
	gzip bool
	// out holds output not yet written to w.
	out bytes.Buffer
	// live holds rendered bytes not yet compressed (gzip only).
	live bytes.Buffer
	fw   *flate.Writer
	// crc and size are the CRC-32 and length (mod 2^32) of the plain
	// bytes so far (gzip only).
	crc, size uint32
	// err is the first error of w; later output is dropped.
	err error
}

// bodyWriters keeps the body writers of two concurrent scrapes.
var bodyWriters = newFreeList(2, func() *bodyWriter { return new(bodyWriter) })

// getBodyWriter returns a bodyWriter writing to w, gzip-compressed when gz
// is set. Close must be called to finish the body, and putBodyWriter once
// it is no longer used.
func getBodyWriter(w io.Writer, gz bool) *bodyWriter {
	b := bodyWriters.get()
	b.w, b.gzip = w, gz
	b.out.Grow(2 * flushAt)
	if gz {
		b.fw = flateWriters.get()
		b.out.Write(gzipHeader)
	}
	return b
}

// putBodyWriter keeps b for a later scrape; keeping unusually large
// buffers is not worth their memory.
func putBodyWriter(b *bodyWriter) {
	if b.fw != nil {
		b.fw.Reset(nil)
		flateWriters.put(b.fw)
	}
	out, live := b.out, b.live
	out.Reset()
	live.Reset()
	*b = bodyWriter{}
	if out.Cap() <= 4*flushAt && live.Cap() <= 4*flushAt {
		b.out, b.live = out, live
	}
	bodyWriters.put(b)
}

// Write takes bytes rendered during the scrape. It never fails; the first
// error of w is returned by Close and later calls drop their bytes.
func (b *bodyWriter) Write(p []byte) (int, error) {
	if !b.gzip {
		b.emit(p)
		return len(p), nil
	}
	b.live.Write(p)
	if b.live.Len() >= flushAt {
		b.compressLive()
	}
	return len(p), nil
}

// writeRendering appends a cached rendering: plain bytes for a plain
// body, a deflate segment for a gzip body.
func (b *bodyWriter) writeRendering(r *rendering) {
	if b.gzip {
		b.compressLive()
		b.crc = multModP(r.shift, b.crc) ^ r.crc
		b.size += uint32(r.size)
	}
	b.emit(r.b)
}

// compressLive appends the segment of the live bytes to the output.
func (b *bodyWriter) compressLive() {
	if b.live.Len() == 0 {
		return
	}
	if b.out.Len() >= flushAt/2 {
		b.flush()
	}
	plain := b.live.Bytes()
	b.crc = crc32.Update(b.crc, crc32.IEEETable, plain)
	b.size += uint32(len(plain))
	appendSegment(&b.out, b.fw, plain)
	b.live.Reset()
}

// emit appends output, first handing the pending output to w when both
// would exceed flushAt; output of flushAt or more goes to w directly.
func (b *bodyWriter) emit(p []byte) {
	if b.out.Len()+len(p) > flushAt {
		b.flush()
		if len(p) >= flushAt {
			b.write(p)
			return
		}
	}
	b.out.Write(p)
}

// flush hands the pending output to w.
func (b *bodyWriter) flush() {
	if b.out.Len() > 0 {
		b.write(b.out.Bytes())
		b.out.Reset()
	}
}

// write hands p to w unless w failed before.
func (b *bodyWriter) write(p []byte) {
	if b.err == nil {
		_, b.err = b.w.Write(p)
	}
}

// Close ends the body and writes what is pending. It returns the first
// error of w.
func (b *bodyWriter) Close() error {
	if b.gzip {
		b.compressLive()
		b.emit(finalBlock)
		var trailer [8]byte
		binary.LittleEndian.PutUint32(trailer[:4], b.crc)
		binary.LittleEndian.PutUint32(trailer[4:], b.size)
		b.emit(trailer[:])
	}
	b.flush()
	return b.err
}

// crc32Shift returns x^(8n) modulo the CRC-32 polynomial. The CRC-32
// (IEEE) of a byte string with CRC crc1 followed by n bytes with CRC crc2
// is multModP(crc32Shift(n), crc1) ^ crc2, as zlib's crc32_combine
// computes it.
func crc32Shift(n int) uint32 { return x2nModP(uint64(n), 3) }

// multModP returns a*b modulo the reflected CRC-32 polynomial; bit 31 of
// an operand is its x^0 coefficient.
func multModP(a, b uint32) uint32 {
	const poly = 0xedb88320
	m := uint32(1) << 31
	var p uint32
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ poly
		} else {
			b >>= 1
		}
	}
}

// x2nModP returns x^(n*2^k) modulo the polynomial.
func x2nModP(n uint64, k uint) uint32 {
	p := uint32(1) << 31 // x^0
	for n != 0 {
		if n&1 != 0 {
			p = multModP(x2nTable[k&31], p)
		}
		n >>= 1
		k++
	}
	return p
}

// x2nTable holds x^(2^k) modulo the polynomial for k = 0..31.
var x2nTable = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < 32; k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()
