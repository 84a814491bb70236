package proxy

import (
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fulcrumlb/fulcrum/config"
)

// Event loops for plain HTTP/1.1 client connections.
//
// A goroutine per connection parks twice per request (waiting for the
// request, then for the real server's answer), and on a busy machine each
// park and wake-up costs more than the proxying itself. An event loop, as
// HAProxy and nginx run, instead takes the ready connections of one
// epoll_wait and serves them back to back: a loop goroutine parks only when
// none of its connections has anything to do.
//
// A loop serves the common exchange whole: a request without a body,
// forwarded on an idle pooled connection, answered with a head and a body
// that fit one buffer. Whenever an exchange needs to wait in the middle
// (a request body, a connect, a large or chunked answer, compression, a
// queue, an upgrade, a slow reader), the loop hands the connection to a
// goroutine that finishes the exchange with the ordinary code (http.go) and
// gives the connection back once it is idle.
//
// A loop's sockets are bare descriptors in its own epoll set
// (edge-triggered), read and written with raw system calls, and out of Go's
// poller: a socket in both would wake the runtime's poller thread on every
// edge, for nothing (fdconn.go). A goroutine taking an exchange over is
// given a duplicate in Go's poller, and closes it when it gives the
// connection back.
//
// While it is busy, a loop waits for events in epoll_wait itself, a raw
// system call that keeps its P (Go's right to run code), so that the
// kernel wakes the loop's thread directly, on whichever CPU is free: there
// is one loop per CPU, and each runs whenever there is work, as HAProxy's
// threads do. (Parked in Go's poller instead, a loop is woken by another
// thread's poll: a hop that left CPUs idle in the benchmark, and with
// every P busy, a wait of up to 10ms for sysmon's poll.) Go's runtime sees
// a loop blocked there as running, so GOMAXPROCS is raised by one per loop,
// keeping the CPUs' worth of Ps for the process's goroutines; the runtime's
// preemption signal interrupts the wait (EINTR) whenever it needs the P,
// for a garbage collection for instance. After loopHot without an event, a
// loop waits in an ordinary blocking system call, which gives the P up, so
// that an idle process holds no CPU. (Not in Go's poller: its epoll
// descriptor there would wake the poller thread whenever the loop's set
// turned ready, as its sockets would.)

// Loop connection states.
const (
	lcIdle   uint8 = iota // waiting for a request
	lcHead                // part of a request head came
	lcServer              // the request went to a real server; waiting for the answer
	lcFlush               // the answer is written in part; waiting until the client takes the rest
	lcAway                // a goroutine serves the connection
)

// loopSweep is how often a loop looks for connections whose wait ran past
// its timeout. Timeouts are seconds long; they may so fire up to this late.
const loopSweep = 250 * time.Millisecond

// loopHot is how long a loop waits for its next event in the kernel,
// holding its P, before it gives the P up. Below sysmon's 10ms
// preemption tick, so that a loop waiting there is not preempted for it.
const loopHot = 5 * time.Millisecond

// loopConn is an event loop's state of one client connection.
type loopConn struct {
	loop     *evloop
	fd       int // the client connection's descriptor
	slot     int32
	state    uint8
	readable bool         // the socket may hold unread bytes (an edge came, or the last read filled the room)
	keep     bool         // lcFlush: the connection serves another request once flushed
	due      time.Time    // end of the current wait; zero for none
	bc       *backendConn // lcServer: the exchange's real-server connection (to record.rs)
}

// Messages to a loop from other goroutines.
const (
	loopAdopt = iota // serve a new connection
	loopBack         // a goroutine hands an idle connection back
	loopDrop         // a goroutine ended the connection: forget it
	loopStop         // shutdown: end the connection once idle
	loopForce        // shutdown grace over: end it now
	loopCut          // its real server went into maintenance
	loopFree         // a registered real-server connection was closed
)

type loopMsg struct {
	kind int
	cc   *clientConn
	slot int32
	gen  uint32
}

type loopSlot struct {
	gen uint32
	cc  *clientConn  // a client connection, or the client a real-server connection serves now
	bc  *backendConn // a real-server connection, or nil for a client's slot
}

// evloop is one event loop.
type evloop struct {
	id      int // 1, 2, … in start order: its pool in realServer.idle
	ep      int
	wake    int  // eventfd: slot 0
	hot     bool // the last wait found events: the next one keeps the P
	started bool // the loop started goroutines since its last wait
	evs     [128]unix.EpollEvent
	now     time.Time // read once per batch of events: the loop's clock

	slots []loopSlot
	free  []int32
	conns map[*clientConn]struct{}
	sweep time.Time // next sweep

	mu       sync.Mutex
	inbox    []loopMsg
	work     []loopMsg
	signaled bool
}

// The loops of the process: set by SetEventLoops, started on first use.
var loops = struct {
	mu    sync.Mutex
	n     int
	force int // tests: the number of loops whatever the configuration says; -1 for none
	all   []*evloop
	next  atomic.Uint32
	// Exchanges the loops served whole, and those they handed to a
	// goroutine (tests read them).
	served, handed atomic.Uint64
}{force: -1}

// SetEventLoops sets how many event loops serve plain HTTP/1.1 clients (0:
// none, a goroutine per connection), at most one per CPU (config.CPUs):
// more would only take turns on them. Loops already started keep serving
// their connections; new connections go to the first n.
func SetEventLoops(n int) {
	loops.mu.Lock()
	if loops.force >= 0 {
		n = loops.force
	}
	loops.n = min(max(n, 0), config.CPUs())
	loops.mu.Unlock()
}

// loopStatus is the loops' part of Status.
func loopStatus() EventLoopStatus {
	loops.mu.Lock()
	running := len(loops.all)
	loops.mu.Unlock()
	return EventLoopStatus{Running: running, Served: loops.served.Load(), HandedOff: loops.handed.Load()}
}

// pickLoop returns the loop for a new connection, or nil when loops are
// off or cannot run here.
func pickLoop() *evloop {
	loops.mu.Lock()
	defer loops.mu.Unlock()
	if loops.n == 0 {
		return nil
	}
	for len(loops.all) < loops.n {
		l, err := newLoop()
		if err != nil {
			loops.n = 0 // no epoll or eventfd: goroutines serve instead
			return nil
		}
		loops.all = append(loops.all, l)
		l.id = len(loops.all)
		// A P for each loop on top of the CPUs' (see the top of the file).
		if p := config.CPUs() + len(loops.all); runtime.GOMAXPROCS(0) < p {
			runtime.GOMAXPROCS(p)
		}
		go l.run()
	}
	i := loops.next.Add(1) % uint32(loops.n)
	return loops.all[i]
}

func newLoop() (*evloop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, err
	}
	l := &evloop{ep: ep, wake: wake, conns: map[*clientConn]struct{}{},
		slots: make([]loopSlot, 1, 64)} // slot 0: wake
	return l, nil
}

// wait returns the number of ready events in l.evs, or 0 when the next
// sweep is due first: it waits in the kernel, keeping the P while the loop
// is busy, and giving it up (a blocking system call) once it is not (see
// the top of the file).
func (l *evloop) wait() int {
	if l.started {
		// The goroutines the loop started wait in its P's run queue; the
		// P is theirs before the loop holds it in the kernel.
		l.started = false
		runtime.Gosched()
	}
	ms := max(l.sweep.Sub(l.now), 0).Milliseconds()
	if l.hot {
		ms = min(ms, loopHot.Milliseconds())
		n, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.ep),
			uintptr(unsafe.Pointer(&l.evs[0])), uintptr(len(l.evs)), uintptr(ms), 0, 0)
		switch {
		case errno != 0: // EINTR: the runtime wants the P, which the loop's next call yields
			return 0
		case n == 0 && ms == loopHot.Milliseconds():
			l.hot = false
		}
		return int(n)
	}
	n, _, errno := syscall.Syscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.ep),
		uintptr(unsafe.Pointer(&l.evs[0])), uintptr(len(l.evs)), uintptr(ms), 0, 0)
	if errno != 0 || n == 0 {
		return 0
	}
	l.hot = true
	return int(n)
}

func (l *evloop) run() {
	l.now = time.Now()
	l.sweep = l.now.Add(loopSweep)
	for {
		n := l.wait()
		l.now = time.Now()
		for i := 0; i < n; i++ {
			ev := &l.evs[i]
			l.event(ev.Fd, uint32(ev.Pad), ev.Events)
		}
		if !l.now.Before(l.sweep) {
			l.expire(l.now)
			l.sweep = l.now.Add(loopSweep)
		}
	}
}

func (l *evloop) event(slot int32, gen uint32, events uint32) {
	if slot == 0 {
		l.drain()
		return
	}
	e := &l.slots[slot]
	if e.gen != gen {
		return // the slot was freed (and perhaps taken again) since
	}
	cc := e.cc
	if cc == nil {
		return // an idle pooled real-server connection
	}
	if e.bc != nil {
		if cc.lc.state == lcServer && cc.lc.bc == e.bc {
			l.answer(cc)
		}
		return
	}
	switch cc.lc.state {
	case lcIdle, lcHead:
		l.read(cc)
	case lcFlush:
		if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			l.flush(cc)
		}
		if events&unix.EPOLLIN != 0 {
			cc.lc.readable = true
		}
	case lcServer:
		if events&unix.EPOLLIN != 0 {
			cc.lc.readable = true // a pipelined request: read after the answer
		}
	}
}

// register adds a descriptor to the loop's epoll set; the slot names it in
// events.
func (l *evloop) register(fd int, cc *clientConn, bc *backendConn) (slot int32, ok bool) {
	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		slot = int32(len(l.slots))
		l.slots = append(l.slots, loopSlot{})
	}
	e := &l.slots[slot]
	e.gen++
	e.cc, e.bc = cc, bc
	ev := unix.EpollEvent{Events: loopEvents, Fd: slot, Pad: int32(e.gen)}
	if err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.release(slot)
		return 0, false
	}
	return slot, true
}

// release frees a slot; events already taken for it are ignored (gen).
func (l *evloop) release(slot int32) {
	e := &l.slots[slot]
	e.gen++
	e.cc, e.bc = nil, nil
	l.free = append(l.free, slot)
}

// unregister removes a registered real-server connection from the loop,
// which no longer watches it (a goroutine takes it, or it closes).
func (l *evloop) unregister(bc *backendConn) {
	if bc.lp != l {
		return
	}
	if e := &l.slots[bc.lslot]; e.bc == bc && e.gen == bc.lgen {
		unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, bc.fd, nil)
		l.release(bc.lslot)
	}
	bc.lp = nil
}

// unregisterFrom takes bc out of another loop's epoll set; that loop frees
// the slot when it reads the message.
func (l *evloop) unregisterFrom(bc *backendConn) {
	unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, bc.fd, nil)
	l.send(loopMsg{kind: loopFree, slot: bc.lslot, gen: bc.lgen})
	bc.lp = nil
}

// post sends a message to the loop from another goroutine.
func (l *evloop) post(cc *clientConn, kind int) {
	l.send(loopMsg{kind: kind, cc: cc})
}

func (l *evloop) send(m loopMsg) {
	l.mu.Lock()
	l.inbox = append(l.inbox, m)
	signal := !l.signaled
	l.signaled = true
	l.mu.Unlock()
	if signal {
		var one = [8]byte{1}
		unix.Write(l.wake, one[:])
	}
}

func (l *evloop) drain() {
	var buf [8]byte
	unix.Read(l.wake, buf[:])
	l.mu.Lock()
	l.work, l.inbox = l.inbox, l.work[:0]
	l.signaled = false
	l.mu.Unlock()
	for i := range l.work {
		m := l.work[i]
		l.work[i] = loopMsg{}
		l.message(m)
	}
}

func (l *evloop) message(m loopMsg) {
	cc := m.cc
	switch m.kind {
	case loopAdopt:
		l.adoptNow(cc)
	case loopBack:
		// The goroutine closed its duplicate (fdconn.go): the loop's
		// descriptor serves the connection again.
		cc.conn = nil
		cc.in.detach()
		cc.out.rebind(nil, nil)
		cc.lc.state = lcIdle
		cc.lc.readable = false
		l.watch(cc, loopEvents) // reports what came while away
		l.idle(cc)
	case loopDrop:
		l.forget(cc)
	case loopStop:
		if _, ok := l.conns[cc]; ok && cc.lc.state == lcIdle {
			l.end(cc)
		}
	case loopForce:
		if _, ok := l.conns[cc]; !ok {
			return
		}
		if cc.lc.state == lcAway {
			cc.conn.Close() // the goroutine ends, and drops it
			if bc := cc.backend.Load(); bc != nil {
				bc.abort()
			}
			return
		}
		if cc.lc.state == lcServer {
			l.endAttempt(cc, false)
		}
		cc.linger = false
		cc.out.spill = nil
		l.end(cc)
	case loopCut:
		if _, ok := l.conns[cc]; !ok {
			return
		}
		if cc.lc.state == lcAway {
			if bc := cc.backend.Load(); bc != nil {
				bc.abort()
			}
			return
		}
		switch {
		case cc.lc.state != lcServer:
		case cc.sentBody: // as a goroutine's exchange would: not sent again
			l.endAttempt(cc, false)
			l.done(cc, cc.fail(502, "real server closed the connection without a response", net.ErrClosed))
		default: // send the request again
			rs := cc.rs
			l.endAttempt(cc, true)
			l.away(cc, &resumed{rs: rs})
		}
	case loopFree:
		if e := &l.slots[m.slot]; e.gen == m.gen && e.bc != nil {
			l.release(m.slot)
		}
	}
}

// adopt hands a new client connection to the loop (from its accept
// goroutine).
func (l *evloop) adopt(cc *clientConn) {
	cc.out.noWait = true
	l.post(cc, loopAdopt)
}

func (l *evloop) adoptNow(cc *clientConn) {
	slot, ok := l.register(cc.lc.fd, cc, nil)
	if !ok || cc.svc.isStopping() {
		if ok {
			l.release(slot)
		}
		cc.finish()
		return
	}
	cc.lc.slot, cc.out.fd = slot, cc.lc.fd
	l.conns[cc] = struct{}{}
	cc.lc.state = lcIdle
	cc.lc.readable = false // registering reports what is there already
	l.idle(cc)
}

// forget drops a connection the loop no longer serves (it was ended).
func (l *evloop) forget(cc *clientConn) {
	if _, ok := l.conns[cc]; !ok {
		return
	}
	delete(l.conns, cc)
	l.release(cc.lc.slot)
}

// end closes a connection the loop serves; one that must still send what
// it holds, or linger, ends in a goroutine.
func (l *evloop) end(cc *clientConn) {
	slow := len(cc.out.spill) > 0 || cc.linger
	if slow {
		l.watch(cc, 0)
		if cc.attach() != nil { // no descriptor left: end at once
			cc.out.spill, cc.linger, slow = nil, false, false
		}
	}
	l.forget(cc)
	cc.lc.state = lcAway
	if !slow {
		cc.finish()
		return
	}
	l.started = true
	go func() {
		cc.out.extendDeadline(time.Now(), cc.cfg.Timeouts.Client)
		cc.out.flushSpill()
		cc.finish()
	}()
}

// idle waits for the connection's next request.
func (l *evloop) idle(cc *clientConn) {
	cc.lc.state = lcIdle
	if len(cc.in.buffered()) > 0 { // a pipelined request is here already
		l.read(cc)
		return
	}
	cc.in.release()
	cc.out.release()
	cc.toSrv.release()
	if cc.svc.isStopping() {
		l.end(cc)
		return
	}
	cc.cfg = cc.svc.config()
	cc.lc.due = l.now.Add(cc.cfg.Timeouts.Client)
	if cc.lc.readable {
		l.read(cc)
	}
}

// away hands the connection to a goroutine for the rest of the exchange
// (through dispatch: r is the attempt the loop began, or nil), which gives
// it back when it is idle again.
func (l *evloop) away(cc *clientConn, r *resumed) {
	loops.handed.Add(1)
	if r != nil && r.bc != nil {
		if err := r.bc.loosen(l); err != nil {
			r.bc = nil // the goroutine dials another
			cc.toSrv.spill = nil
			if cc.sentBody { // unless the request's body went on it
				cc.backend.Store(nil)
				cc.pool.Pool.Release(r.rs.Server)
				l.done(cc, cc.fail(502, "no descriptor left to read the real server's answer", err))
				return
			}
		}
	}
	if err := cc.attach(); err != nil {
		if r != nil {
			if r.bc != nil {
				r.bc.close()
			}
			cc.backend.Store(nil)
			cc.pool.Pool.Release(r.rs.Server)
		}
		l.done(cc, cc.fail(503, "no descriptor left to serve the request", err))
		return
	}
	cc.lc.state, cc.lc.due = lcAway, time.Time{}
	l.watch(cc, 0) // the goroutine's reads and writes must not wake the loop
	l.started = true
	go cc.awayFromLoop(l, r)
}

// attach gives the connection, which the loop holds, to a goroutine: as a
// duplicate of the loop's descriptor in Go's poller (fdconn.go).
func (cc *clientConn) attach() error {
	c, err := newFDConn(cc.lc.fd, cc.local, cc.remote)
	if err != nil {
		return err
	}
	cc.conn = c
	cc.in.init(c)
	cc.out.rebind(c, cc.in.raw)
	return nil
}

// loopEvents is what a loop watches on its descriptors, edge-triggered.
const loopEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// watch sets what the loop watches on a client's descriptor: loopEvents, or
// nothing while a goroutine serves it. Watching again reports at once what
// is ready already.
func (l *evloop) watch(cc *clientConn, events uint32) {
	ev := unix.EpollEvent{Events: events, Fd: cc.lc.slot, Pad: int32(l.slots[cc.lc.slot].gen)}
	unix.EpollCtl(l.ep, unix.EPOLL_CTL_MOD, cc.lc.fd, &ev)
}

func (cc *clientConn) awayFromLoop(l *evloop, r *resumed) {
	// The loop's reads and writes ignore the connection's deadlines, which
	// may so have run out; this goroutine's must be live.
	now := time.Now()
	cc.out.extendDeadline(now, cc.cfg.Timeouts.Client)
	cc.in.extendDeadline(now, cc.cfg.Timeouts.Client)
	keep := cc.out.flushSpill() == nil
	if keep {
		keep = cc.proxyRequest(r)
	}
	s := cc.svc
	s.logExchange(&cc.record, cc.clientIP)
	s.account(&cc.record)
	keep = keep && !s.isStopping()
	for keep && len(cc.in.buffered()) > 0 { // pipelined requests
		keep = cc.exchange()
	}
	if !keep {
		cc.finish()
		l.post(cc, loopDrop)
		return
	}
	cc.out.noWait = true
	cc.conn.Close() // out of Go's poller; the loop's descriptor stays open
	l.post(cc, loopBack)
}

// expire acts on the waits that ran past their timeouts.
func (l *evloop) expire(now time.Time) {
	for cc := range l.conns {
		lc := &cc.lc
		if lc.due.IsZero() || now.Before(lc.due) {
			continue
		}
		switch lc.state {
		case lcIdle:
			l.end(cc) // timeouts.client: end quietly
		case lcHead:
			lc.due = time.Time{}
			l.done(cc, cc.headError(os.ErrDeadlineExceeded)) // 408
		case lcServer:
			l.endAttempt(cc, false)
			l.done(cc, cc.fail(504, "no response from real server within timeouts.server", os.ErrDeadlineExceeded))
		case lcFlush:
			cc.out.spill = nil
			cc.linger = false
			l.end(cc)
		}
	}
}
