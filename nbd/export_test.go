package nbd

import "time"

// SetReplyWriteTimeout shortens the reply write deadline for a test and
// returns a function that restores it.
func SetReplyWriteTimeout(d time.Duration) (restore func()) {
	old := replyWriteTimeout
	replyWriteTimeout = d
	return func() { replyWriteTimeout = old }
}
