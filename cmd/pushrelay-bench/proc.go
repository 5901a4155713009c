package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// proc is a server process started by the tool.
type proc struct {
	name   string
	cmd    *exec.Cmd
	url    string
	log    *os.File
	exited chan struct{}
	err    error
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startProc starts bin with args plus a listen address on a free loopback
// port, logging to dir/<name>.log, and waits until /-/ready answers 200.
func startProc(name, bin, dir string, args []string, readyTimeout time.Duration) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := launch(name, bin, dir, append([]string{"--web.listen-address=" + addr}, args...))
	if err != nil {
		return nil, err
	}
	p.url = "http://" + addr
	cl := &http.Client{Timeout: time.Second, Transport: &http.Transport{Proxy: nil}}
	err = p.waitReady(readyTimeout, func() bool {
		resp, err := cl.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// launch starts bin with args in dir, logging to dir/<name>.log.
func launch(name, bin, dir string, args []string) (*proc, error) {
	logf, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logf, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	logf.WriteString(fmt.Sprintf("### %s %s\n", bin, strings.Join(args, " ")))
	fmt.Fprintf(os.Stderr, "  started %s (pid %d): %s %s\n", name, cmd.Process.Pid, bin, strings.Join(args, " "))
	return p, nil
}

// waitReady polls ready until it reports true; it kills p and fails when p
// exits or timeout passes first.
func (p *proc) waitReady(timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited during start-up (%v); see %s", p.name, p.err, p.log.Name())
		default:
		}
		if ready() {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.kill()
	return fmt.Errorf("%s not ready after %s; see %s", p.name, timeout, p.log.Name())
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM and waits up to timeout for the exit, then kills.
func (p *proc) stop(timeout time.Duration) error {
	defer p.log.Close()
	select {
	case <-p.exited:
		return fmt.Errorf("%s had already exited: %v", p.name, p.err)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s did not stop within %s after SIGTERM; killed", p.name, timeout)
	}
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
}

// alive reports an error when the process has exited.
func (p *proc) alive() error {
	if p == nil {
		return nil
	}
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited: %v", p.name, p.err)
	default:
		return nil
	}
}

// resetPeakRSS resets VmHWM of pid (Linux clear_refs 5). It reports whether
// that worked.
func resetPeakRSS(pid int) bool {
	if pid <= 0 {
		return false
	}
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
}

// memStatus returns VmHWM and VmRSS of pid in bytes.
func memStatus(pid int) (hwm, rss int64) {
	if pid <= 0 {
		return 0, 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &hwm
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &rss
		default:
			continue
		}
		fields := strings.Fields(line)
		if len(fields) >= 2 {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			*dst = kb << 10
		}
	}
	return hwm, rss
}

// cpuTime returns the user plus system CPU time of pid.
func cpuTime(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name may contain spaces; fields start after ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is the state (field 3); utime is field 14, stime field 15.
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// machineCPU returns the busy CPU time of the whole machine (all cores)
// from /proc/stat: user, nice, system, irq, softirq and steal; steal, the
// time the hypervisor ran other guests on this machine's cores, is also
// returned alone.
func machineCPU() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseInt(fields[i], 10, 64)
		ticks += v
	}
	stolen, _ := strconv.ParseInt(fields[8], 10, 64)
	return time.Duration(ticks) * time.Second / clockTicks, time.Duration(stolen) * time.Second / clockTicks
}

// busyCPU is the busy CPU time of machineCPU.
func busyCPU() time.Duration {
	busy, _ := machineCPU()
	return busy
}

// settle waits until the machine is quiet, so that a timed round does not
// start while the previous one's server still works off its load (garbage
// collection, compaction, the kernel writing back its files): until the
// busy CPU time busy reports grows by less than quietShare of one core over
// a window, or for at most limit. It returns how long it waited and whether
// the machine got quiet.
func settle(busy func() time.Duration, window time.Duration, quietShare float64, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	prev := busy()
	for time.Since(start) < limit {
		time.Sleep(window)
		now := busy()
		if float64(now-prev) < quietShare*float64(window) {
			return time.Since(start), true
		}
		prev = now
	}
	return time.Since(start), false
}

// selfCPU returns the CPU time used by this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// nullServer is an in-process HTTP server that reads and discards every
// request body and answers 200: the ceiling of what the load tool and the
// loopback network can do on this machine.
type nullServer struct {
	srv *http.Server
	url string
}

func startNullServer() (*nullServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(os.Stderr, "null server: %v\n", err)
		}
	}()
	return &nullServer{srv: srv, url: "http://" + l.Addr().String()}, nil
}

func (n *nullServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = n.srv.Shutdown(ctx)
}

// syncResult is the latency of a 16 KiB write followed by fsync in the
// work directory, measured before the push phases.
type syncResult struct {
	Syncs int     `json:"syncs"`
	P50ms float64 `json:"p50_ms"`
	P90ms float64 `json:"p90_ms"`
}

// probeSync writes 16 KiB at 200 offsets of a 4 MiB file in dir, syncing
// after each write, as a bbolt commit syncs its pages, and returns the
// latencies of the syncs. The file is removed.
func probeSync(dir string) (*syncResult, error) {
	const writes, block, span = 200, 16 << 10, 4 << 20
	f, err := os.CreateTemp(dir, "sync-probe-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, span), 0); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	buf := make([]byte, block)
	times := make([]time.Duration, writes)
	for i := range times {
		buf[0] = byte(i)
		if _, err := f.WriteAt(buf, int64(i*7919%(span/block))*block); err != nil {
			return nil, err
		}
		start := time.Now()
		if err := f.Sync(); err != nil {
			return nil, err
		}
		times[i] = time.Since(start)
	}
	slices.Sort(times)
	return &syncResult{Syncs: writes, P50ms: ms(percentile(times, 0.5)), P90ms: ms(percentile(times, 0.9))}, nil
}
