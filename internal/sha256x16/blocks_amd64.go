//go:build amd64 && !purego

package sha256x16

import "golang.org/x/sys/cpu"

//go:generate go run gen.go

// hasKernel: the kernel needs AVX-512 F (32 zmm registers, rotates,
// ternary logic, two-table permutes) and BW (byte shuffles on zmm); cpu
// also checks that the OS saves the zmm state.
var hasKernel = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

// hasSHAExt reports the SHA extensions (CPUID leaf 7, EBX bit 29), which
// crypto/sha256 uses for one stream: about eight of the kernel's lanes'
// worth on the Xeon this project is measured on, against two or three
// lanes' worth for its AVX2 code. See handoffLanes.
var hasSHAExt = func() bool {
	if maxLeaf, _, _, _ := cpuid(0, 0); maxLeaf < 7 {
		return false
	}
	_, ebx, _, _ := cpuid(7, 0)
	return ebx&(1<<29) != 0
}()

//go:noescape
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

// blocks runs n SHA-256 block compressions in each of the 16 lanes: lane i
// reads 64 bytes at ptrs[i], then advances ptrs[i] by strides[i]. state[j][i]
// is working word j of lane i.
//
//go:noescape
func blocks(state *[8][Lanes]uint32, ptrs *[Lanes]uintptr, strides *[Lanes]uintptr, n int)

//go:noescape
func prefetch(p *byte, n int)
