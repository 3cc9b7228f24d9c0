package nbd

import "time"

// SetReplyWriteTimeout shortens the reply write deadline for a test and
// returns a function that restores it.
func SetReplyWriteTimeout(d time.Duration) (restore func()) {
	old := replyWriteTimeout
	replyWriteTimeout = d
	return func() { replyWriteTimeout = old }
}

// SetRequestStall shortens how long the rest of a started request may take
// to arrive (requestStallBase, minPayloadRate) for a test and returns a
// function that restores them.
func SetRequestStall(base time.Duration, rate int64) (restore func()) {
	oldBase, oldRate := requestStallBase, minPayloadRate
	requestStallBase, minPayloadRate = base, rate
	return func() { requestStallBase, minPayloadRate = oldBase, oldRate }
}
