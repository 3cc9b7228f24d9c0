package worm

// fastZeroer is the image's answer to NBD's FAST_ZERO question (see
// nbd.FastZeroer; blockdev.File implements it).
type fastZeroer interface {
	CanZeroFast(off, length int64, mayPunch bool) bool
}

// CanZeroFast answers from the image: the device adds no slow path of its
// own to WRITE_ZEROES (it is checked against the engine like any write, and
// a refused or discarded one is still answered at once).
func (d *Device) CanZeroFast(off, length int64, mayPunch bool) bool {
	fz, ok := d.img.(fastZeroer)
	return ok && fz.CanZeroFast(off, length, mayPunch)
}
