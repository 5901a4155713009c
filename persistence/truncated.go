package persistence

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's file layout, version 2: the first two pages are meta pages, each
// a 16-byte page header followed by the meta fields in the machine's byte
// order.
const (
	boltMagic          = 0xED0CDAED
	boltVersion        = 2
	boltPageHeaderSize = 16
	boltMinPageSize    = 512
	// Offsets of the meta fields checkLength reads: magic, version, page
	// size, ..., page high-water mark, transaction id, and the checksum
	// (FNV-64a of the bytes before it), the last field.
	metaMagic, metaVersion, metaPageSize = 0, 4, 8
	metaPages, metaTxID, metaChecksum    = 40, 48, 56
	boltMetaSize                         = metaChecksum + 8
)

// checkLength returns an error when the bbolt file f of size bytes is
// shorter than the pages its newest valid meta page says it holds, as a
// copy cut short by a full disk is. bbolt maps such a file and faults
// (SIGBUS) when it reads past the end, instead of failing. An empty file,
// or one without a valid meta page, is left to bbolt to fill or reject.
func checkLength(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	ne := binary.NativeEndian
	var pageSize, pages, txid uint64
	meta := make([]byte, boltMetaSize)
	for i := range 2 {
		clear(meta)
		if _, err := f.ReadAt(meta, int64(uint64(i)*pageSize)+boltPageHeaderSize); err != nil && err != io.EOF {
			return err
		}
		h := fnv.New64a()
		h.Write(meta[:metaChecksum])
		valid := ne.Uint32(meta[metaMagic:]) == boltMagic && ne.Uint32(meta[metaVersion:]) == boltVersion && h.Sum64() == ne.Uint64(meta[metaChecksum:])
		if i == 0 {
			// Without a valid first meta page, bbolt looks for the
			// second one at the operating system's page size.
			pageSize = uint64(os.Getpagesize())
			if valid {
				pageSize = uint64(ne.Uint32(meta[metaPageSize:]))
			}
			if pageSize < boltMinPageSize {
				return nil
			}
		}
		if valid && (pages == 0 || ne.Uint64(meta[metaTxID:]) > txid) {
			pages, txid = ne.Uint64(meta[metaPages:]), ne.Uint64(meta[metaTxID:])
		}
	}
	if pages > uint64(size)/pageSize {
		return fmt.Errorf("file is truncated: %d bytes, its meta page claims %d pages of %d bytes", size, pages, pageSize)
	}
	return nil
}
