package persistence

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// recordVersion is the first byte of every encoded Group. Version 2 added
// PushWritten, FailureWritten and StaleWritten; version 1 records are still
// read, with those times zero.
const (
	recordVersion   = 2
	recordVersionV1 = 1
)

// ErrCorruptRecord is wrapped by every error DecodeGroup returns.
var ErrCorruptRecord = errors.New("corrupt group record")

// Group is the stored form of one push group.
type Group struct {
	// Labels are the grouping labels, sorted by name.
	Labels []Label
	// PushTime and FailureTime are Unix nanoseconds of the last successful
	// and the last failed push; 0 means never.
	PushTime, FailureTime int64
	// PushWritten, FailureWritten and StaleWritten are Unix nanoseconds of
	// the writes that last set push_time_seconds,
	// push_failure_time_seconds and push_stale.
	PushWritten, FailureWritten, StaleWritten int64
	// TTL holds the group's expiry settings; the zero value means none.
	TTL TTL
	// Families are the pushed metric families of the group.
	Families []Family
}

// TTL is the stored expiry setting of a group.
type TTL struct {
	// Nanos is the time to live in nanoseconds; 0 with Source set means
	// expiry is disabled for the group.
	Nanos int64
	// Source names where the TTL came from ("flag", "rule", "header"); empty
	// means no TTL was ever decided for the group.
	Source string
	// Action is "zero" or "delete".
	Action string
	// Expired is true once the expiry action zeroed the group.
	Expired bool
}

// Label is one name/value pair.
type Label struct {
	Name, Value string
}

// Family is one stored metric family.
type Family struct {
	Name string
	// Help is the help string; HasHelp distinguishes an empty help string
	// from none.
	Help    string
	HasHelp bool
	// Type is the numeric value of the io.prometheus.client.MetricType enum.
	Type int32
	// Time is the Unix nanosecond time of the push that last wrote the family.
	Time int64
	// Metrics are the protobuf encodings of io.prometheus.client.Metric
	// messages. EncodeGroup does not retain them.
	Metrics [][]byte
}

// EncodeGroup appends the binary encoding of g to buf and returns the result.
func EncodeGroup(buf []byte, g *Group) []byte {
	buf = append(buf, recordVersion)
	buf = binary.AppendUvarint(buf, uint64(len(g.Labels)))
	for _, l := range g.Labels {
		buf = appendString(buf, l.Name)
		buf = appendString(buf, l.Value)
	}
	buf = binary.AppendVarint(buf, g.PushTime)
	buf = binary.AppendVarint(buf, g.FailureTime)
	buf = binary.AppendVarint(buf, g.PushWritten)
	buf = binary.AppendVarint(buf, g.FailureWritten)
	buf = binary.AppendVarint(buf, g.StaleWritten)
	buf = binary.AppendVarint(buf, g.TTL.Nanos)
	buf = appendString(buf, g.TTL.Source)
	buf = appendString(buf, g.TTL.Action)
	buf = appendBool(buf, g.TTL.Expired)
	buf = binary.AppendUvarint(buf, uint64(len(g.Families)))
	for i := range g.Families {
		f := &g.Families[i]
		buf = appendString(buf, f.Name)
		buf = appendBool(buf, f.HasHelp)
		buf = appendString(buf, f.Help)
		buf = binary.AppendVarint(buf, int64(f.Type))
		buf = binary.AppendVarint(buf, f.Time)
		buf = binary.AppendUvarint(buf, uint64(len(f.Metrics)))
		for _, m := range f.Metrics {
			buf = binary.AppendUvarint(buf, uint64(len(m)))
			buf = append(buf, m...)
		}
	}
	return buf
}

// DecodeGroup decodes a record written by EncodeGroup. The returned Group
// does not share memory with b.
func DecodeGroup(b []byte) (*Group, error) {
	d := decoder{b: b}
	version := d.byte()
	if d.err != nil {
		return nil, d.err
	}
	if version != recordVersion && version != recordVersionV1 {
		return nil, fmt.Errorf("%w: unknown record version %d", ErrCorruptRecord, version)
	}
	g := &Group{}
	n := d.count()
	if n > 0 {
		g.Labels = make([]Label, n)
	}
	for i := range g.Labels {
		g.Labels[i] = Label{Name: d.string(), Value: d.string()}
	}
	g.PushTime = d.varint()
	g.FailureTime = d.varint()
	if version >= 2 {
		g.PushWritten = d.varint()
		g.FailureWritten = d.varint()
		g.StaleWritten = d.varint()
	}
	g.TTL.Nanos = d.varint()
	g.TTL.Source = d.string()
	g.TTL.Action = d.string()
	g.TTL.Expired = d.bool()
	n = d.count()
	if n > 0 {
		g.Families = make([]Family, n)
	}
	for i := range g.Families {
		f := &g.Families[i]
		f.Name = d.string()
		f.HasHelp = d.bool()
		f.Help = d.string()
		t := d.varint()
		if t < 0 || t > math.MaxInt32 {
			d.fail("metric type out of range")
		}
		f.Type = int32(t)
		f.Time = d.varint()
		m := d.count()
		if m > 0 {
			f.Metrics = make([][]byte, m)
		}
		for j := range f.Metrics {
			f.Metrics[j] = []byte(d.string())
		}
		if d.err != nil {
			break
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return nil, d.err
	}
	return g, nil
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func appendBool(buf []byte, v bool) []byte {
	if v {
		return append(buf, 1)
	}
	return append(buf, 0)
}

// decoder reads the fields of a record and remembers the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(msg string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrCorruptRecord, msg)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail("unexpected end of record")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("invalid boolean")
		return false
	}
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("invalid varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("invalid varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length that must fit in the rest of the record, so that a
// corrupt length cannot make the decoder allocate more than the record size.
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.fail("length exceeds record")
		return 0
	}
	return int(v)
}

func (d *decoder) string() string { return string(d.bytes()) }

// bytes reads a length-prefixed byte string without copying it.
func (d *decoder) bytes() []byte {
	n := d.count()
	if d.err != nil {
		return nil
	}
	b := d.b[:n:n]
	d.b = d.b[n:]
	return b
}
