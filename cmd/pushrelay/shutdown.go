package main

import (
	"context"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// shutdown stops every server within one shared deadline: the run group
// interrupts its actors one after the other, so each may only use what is
// left of the bound, and whatever is still open then is closed.
type shutdown struct {
	timeout time.Duration
	once    sync.Once
	ctx     context.Context
	cancel  context.CancelFunc
}

func newShutdown(timeout time.Duration) *shutdown {
	return &shutdown{timeout: timeout}
}

// deadline starts the shared deadline on first use.
func (s *shutdown) deadline() context.Context {
	s.once.Do(func() { s.ctx, s.cancel = context.WithTimeout(context.Background(), s.timeout) })
	return s.ctx
}

// http lets srv finish its requests until the deadline, then closes it.
func (s *shutdown) http(srv *http.Server) {
	if err := srv.Shutdown(s.deadline()); err != nil {
		_ = srv.Close()
	}
}

// grpc lets srv finish its calls until the deadline, then stops it.
func (s *shutdown) grpc(srv *grpc.Server) {
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-s.deadline().Done():
		// Stop closes what is open; a connection still in its handshake
		// ends by the server's connection timeout.
		srv.Stop()
	}
}

// release frees the deadline's timer.
func (s *shutdown) release() {
	if s.cancel != nil {
		s.cancel()
	}
}
