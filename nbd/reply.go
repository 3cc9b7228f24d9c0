package nbd

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// replyBufSize is the batching buffer for replies: small replies (write
	// acknowledgements, 4 KiB reads) queue here and go out in one write.
	replyBufSize = 256 << 10
	// directDataMin is the READ size from which data is not copied into the
	// batch buffer but sent with it in one writev.
	directDataMin = 32 << 10
)

// replyWriter is the single writer of a connection's socket. Replies from
// all workers are appended under mu; the buffer is written out when no other
// reply is waiting for the lock (the queue drained) or when it is full, so a
// burst of completions costs one system call and a lone reply is not delayed.
type replyWriter struct {
	nc         net.Conn
	onErr      func()
	structured bool

	mu      sync.Mutex
	waiting atomic.Int32
	// unflushed is set while buf holds replies held back by a deferred
	// unlock; flushPending sends them.
	unflushed atomic.Bool
	buf       []byte
	iov       [2][]byte
	bufs      net.Buffers
	err       error
}

func (w *replyWriter) lock() bool {
	w.waiting.Add(1)
	w.mu.Lock()
	w.waiting.Add(-1)
	if w.err != nil {
		w.mu.Unlock()
		return false
	}
	if w.buf == nil {
		w.buf = make([]byte, 0, replyBufSize)
	}
	return true
}

func (w *replyWriter) unlock() { w.unlockDefer(false) }

// unlockDefer releases the writer. The batch goes out now unless another
// reply is waiting for the lock (it will send it) or the caller defers it
// (it promises to call flushPending before it waits for anything).
func (w *replyWriter) unlockDefer(deferred bool) {
	if len(w.buf) > 0 {
		if len(w.buf) >= replyBufSize-4096 || (!deferred && w.waiting.Load() == 0) {
			w.write(nil)
		} else if deferred {
			w.unflushed.Store(true)
		}
	}
	w.mu.Unlock()
}

// flushPending sends replies held back by a deferred unlock. (The flag is
// set only while buf holds replies, and write clears it.)
func (w *replyWriter) flushPending() {
	if w.unflushed.Load() {
		w.flushAll()
	}
}

// flushAll sends whatever the batch buffer holds, whoever queued it. Used
// when nobody else will: flushPending trusts the unflushed flag, which a
// reply queued behind a waiting lock() leaves clear (its writer relies on
// the waiter, and a waiter that lost the race to a closing connection
// would drop it).
func (w *replyWriter) flushAll() {
	if !w.lock() {
		return
	}
	if len(w.buf) > 0 {
		w.write(nil)
	}
	w.mu.Unlock()
}

// replyWriteTimeout bounds one write of replies to the socket. A client that
// stops reading (hostile, or hung) would otherwise hold its workers, their
// buffers and its connection slot forever: the workers wait to reply, and
// the reader waits for the workers. A variable so that tests can shorten it.
var replyWriteTimeout = 2 * time.Minute

// write sends the batch buffer followed by data (which may be nil).
func (w *replyWriter) write(data []byte) {
	err := w.nc.SetWriteDeadline(time.Now().Add(replyWriteTimeout))
	switch {
	case err != nil: // the socket is closed: nothing can be sent
	case data == nil:
		_, err = w.nc.Write(w.buf)
	default:
		w.iov[0], w.iov[1] = w.buf, data
		w.bufs = w.iov[:]
		_, err = w.bufs.WriteTo(w.nc)
		w.iov[0], w.iov[1] = nil, nil
		w.bufs = nil
	}
	w.buf = w.buf[:0]
	w.unflushed.Store(false)
	if err != nil {
		w.err = err
		w.onErr()
	}
}

// simple queues a simple reply (no data).
func (w *replyWriter) simple(cookie uint64, errno Errno) { w.reply(cookie, errno, false) }

func (w *replyWriter) reply(cookie uint64, errno Errno, deferred bool) {
	if !w.lock() {
		return
	}
	w.buf = appendSimpleReply(w.buf, errno, cookie)
	w.unlockDefer(deferred)
}

// readReply sends the successful answer to a READ of data at off: a simple
// reply followed by the data, or with structured replies one OFFSET_DATA
// chunk marked DONE (the data is already read, so no error can follow; this
// also satisfies DF).
func (w *replyWriter) readReply(cookie, off uint64, data []byte, deferred bool) {
	if !w.lock() {
		return
	}
	if w.structured {
		w.buf = appendChunkHeader(w.buf, ReplyFlagDone, ReplyTypeOffsetData, cookie, uint32(8+len(data)))
		w.buf = binary.BigEndian.AppendUint64(w.buf, off)
	} else {
		w.buf = appendSimpleReply(w.buf, 0, cookie)
	}
	if len(data) >= directDataMin || len(w.buf)+len(data) > cap(w.buf) {
		w.write(data)
	} else {
		w.buf = append(w.buf, data...)
	}
	w.unlockDefer(deferred)
}

// noneChunk answers a zero-length READ under structured replies.
func (w *replyWriter) noneChunk(cookie uint64) {
	if !w.lock() {
		return
	}
	w.buf = appendChunkHeader(w.buf, ReplyFlagDone, ReplyTypeNone, cookie, 0)
	w.unlock()
}

// errorReply reports errno for a request. With structured replies it is an
// ERROR chunk carrying msg (mandatory for READ, preferred for the rest);
// otherwise a simple reply, with no data even for READ.
func (w *replyWriter) errorReply(cookie uint64, errno Errno, msg string) {
	if !w.lock() {
		return
	}
	if w.structured {
		w.buf = appendChunkHeader(w.buf, ReplyFlagDone, ReplyTypeError, cookie, uint32(6+len(msg)))
		w.buf = binary.BigEndian.AppendUint32(w.buf, uint32(errno))
		w.buf = binary.BigEndian.AppendUint16(w.buf, uint16(len(msg)))
		w.buf = append(w.buf, msg...)
	} else {
		w.buf = appendSimpleReply(w.buf, errno, cookie)
	}
	w.unlock()
}
