package gateway

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

func tmpBody() []byte {
	var b bytes.Buffer
	for i := 0; i < 12; i++ {
		fmt.Fprintf(&b, "# HELP c%d a counter\n# TYPE c%d counter\nc%d{kind=\"a\"} %d\nc%d{kind=\"b\"} %d\n", i, i, i, i*7, i, i*3)
	}
	for i := 0; i < 4; i++ {
		fmt.Fprintf(&b, "# TYPE g%d gauge\ng%d %d.5\n", i, i, i)
	}
	b.WriteString("# TYPE h histogram\n")
	for i := 0; i < 10; i++ {
		fmt.Fprintf(&b, "h_bucket{le=\"%g\"} %d\n", float64(i+1)/10, i*2)
	}
	b.WriteString("h_bucket{le=\"+Inf\"} 30\nh_sum 12.5\nh_count 30\n")
	return b.Bytes()
}

func BenchmarkTmpParse(b *testing.B) {
	body := tmpBody()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		_, _ = ParseBody(bytes.NewReader(body), "")
	}
}

func BenchmarkTmpPrepare(b *testing.B) {
	body := tmpBody()
	g := Grouping{"job": "x", "instance": "y"}
	key := g.Key()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		mfs, _ := ParseBody(bytes.NewReader(body), "")
		for _, mf := range mfs {
			_, _ = newFamily(mf, g, key, time.Now())
		}
	}
}
