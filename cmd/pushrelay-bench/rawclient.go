package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// rawClient is one keep-alive HTTP/1.1 connection that sends PUT requests
// from a reused buffer and reads the answers with a few byte scans. The push
// phases use it instead of net/http, whose client costs several times more
// CPU per request: on a two-core machine that CPU would be taken from the
// server under test.
type rawClient struct {
	addr string
	host string
	// prefix is the path of the base URL, put before every request path.
	prefix  string
	timeout time.Duration
	conn    net.Conn
	r       *bufio.Reader
	req     []byte
}

// newRawClient returns a client for the http:// base URL; it dials on first
// use.
func newRawClient(base string, timeout time.Duration) (*rawClient, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("%s: only http:// is supported", base)
	}
	return &rawClient{addr: u.Host, host: u.Host, prefix: strings.TrimSuffix(u.Path, "/"), timeout: timeout}, nil
}

// put sends body to path (below the base URL) with PUT and reads the answer, as loader.put
// reports it.
func (c *rawClient) put(path string, body []byte) (ok bool, key, msg string) {
	status, text, err := c.do(path, body)
	if err != nil {
		c.close()
		return false, errorKey(0, err), err.Error()
	}
	if status/100 == 2 {
		return true, "", ""
	}
	return false, errorKey(status, nil), text
}

func (c *rawClient) do(path string, body []byte) (int, string, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return 0, "", err
		}
		c.conn, c.r = conn, bufio.NewReaderSize(conn, 4096)
	}
	c.req = append(c.req[:0], "PUT "...)
	c.req = append(c.req, c.prefix...)
	c.req = append(c.req, path...)
	c.req = append(c.req, " HTTP/1.1\r\nHost: "...)
	c.req = append(c.req, c.host...)
	c.req = append(c.req, "\r\nUser-Agent: pushrelay-bench\r\nContent-Type: "+pushContentType+"\r\nContent-Length: "...)
	c.req = strconv.AppendInt(c.req, int64(len(body)), 10)
	c.req = append(c.req, "\r\n\r\n"...)
	c.req = append(c.req, body...)
	if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, "", err
	}
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, "", err
	}
	return c.readResponse()
}

// readResponse reads a status line, the headers and a body of
// Content-Length bytes or in chunks. It returns the status and, for an
// error status, the start of the body.
func (c *rawClient) readResponse() (int, string, error) {
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, "", err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, "", fmt.Errorf("malformed status line %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, "", fmt.Errorf("malformed status line %q", line)
	}
	length, chunked, closing := -1, false, false
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return 0, "", err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, value, _ := bytes.Cut(h, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, "", fmt.Errorf("malformed Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			closing = bytes.EqualFold(value, []byte("close"))
		}
	}
	var body bytes.Buffer
	switch {
	case chunked:
		for {
			sizeLine, err := c.r.ReadSlice('\n')
			if err != nil {
				return 0, "", err
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.SplitN(sizeLine, []byte(";"), 2)[0])), 16, 64)
			if err != nil {
				return 0, "", fmt.Errorf("malformed chunk size %q", sizeLine)
			}
			if _, err := io.CopyN(&body, c.r, size+2); err != nil { // the chunk and its CRLF
				return 0, "", err
			}
			if size == 0 {
				break
			}
		}
	case status/100 == 1 || status == 204 || status == 304:
		// No body.
	case length > 0:
		if _, err := io.CopyN(&body, c.r, int64(length)); err != nil {
			return 0, "", err
		}
	case length < 0:
		return 0, "", errors.New("answer without Content-Length or chunks")
	}
	if closing {
		c.close()
	}
	text := ""
	if status/100 != 2 {
		text = string(bytes.TrimSpace(body.Bytes()[:min(body.Len(), 1024)]))
	}
	return status, text, nil
}

func (c *rawClient) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn, c.r = nil, nil
	}
}
