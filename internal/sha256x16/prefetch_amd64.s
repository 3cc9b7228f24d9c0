//go:build amd64 && !purego

#include "textflag.h"

// func prefetch(p *byte, n int)
// Prefetches the cache lines of p[0:min(n, 512)] and the last line of p[:n].
TEXT ·prefetch(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ n+8(FP), CX
	TESTQ CX, CX
	JLE done
	PREFETCHT0 (AX)
	PREFETCHT0 64(AX)
	PREFETCHT0 128(AX)
	PREFETCHT0 192(AX)
	PREFETCHT0 256(AX)
	PREFETCHT0 320(AX)
	PREFETCHT0 384(AX)
	PREFETCHT0 448(AX)
	PREFETCHT0 -1(AX)(CX*1)
done:
	RET
