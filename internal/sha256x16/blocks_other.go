//go:build !amd64 || purego

package sha256x16

const hasKernel = false

const hasSHAExt = false

func blocks(state *[8][Lanes]uint32, ptrs *[Lanes]uintptr, strides *[Lanes]uintptr, n int) {
	panic("sha256x16: no vector kernel on this platform")
}

func prefetch(p *byte, n int) {}
