package layout

import (
	"fmt"
	"math/bits"
)

// Directory hash versions, as stored in dx_root_info.hash_version and
// s_def_hash_version (DX_HASH_*, fs/ext4/ext4.h). The three unsigned
// variants hash the name's bytes as unsigned char instead of signed char;
// dx_probe (fs/ext4/namei.c) derives them from the superblock flags rather
// than reading them from a root (see (*SuperBlock).DirHashVersion).
const (
	HashLegacy          = 0
	HashHalfMD4         = 1
	HashTea             = 2
	HashLegacyUnsigned  = 3
	HashHalfMD4Unsigned = 4
	HashTeaUnsigned     = 5
	HashSipHash         = 6 // casefolded and encrypted directories only
)

// Superblock s_flags bits (EXT2_FLAGS_*, fs/ext4/ext4.h).
const (
	SbFlagSignedHash   = 0x1
	SbFlagUnsignedHash = 0x2
	SbFlagTestFS       = 0x4
)

// dxHashEOF is EXT4_HTREE_EOF_32BIT (fs/ext4/ext4.h), the end-of-directory
// position of a 32-bit readdir of an htree, whose positions are major >> 1
// (hash2pos, fs/ext4/dir.c): no name may hash to it.
const dxHashEOF = 0x7FFFFFFF

// dxDefaultSeed replaces an all-zero s_hash_seed (ext4fs_dirhash,
// fs/ext4/hash.c): the four MD4 initial chaining values.
var dxDefaultSeed = [4]uint32{0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}

// DirHash returns the major and minor hash that the kernel's htree lookup
// computes for name under hash version (0..5, see HashLegacy) and the
// superblock's s_hash_seed (ext4fs_dirhash, fs/ext4/hash.c; e2fsprogs
// lib/ext2fs/dirhash.c computes the same, except for the end-of-directory
// case below). The index entries (dx_entry.hash) are compared with major;
// minor only orders readdir of equal majors, and is 0 for the legacy hash.
//
// The low bit of major is always clear: in an index entry that bit marks a
// leaf that continues a run of equal hashes from the previous leaf
// (do_split, fs/ext4/namei.c). A major that would be 0xFFFFFFFE, the
// 32-bit end-of-directory position, becomes 0xFFFFFFFC as in the kernel;
// e2fsprogs (debugfs dx_hash, e2fsck -D) does not make that exception.
//
// In a casefolded directory (InodeFlagCasefold) the kernel hashes the
// casefolded name (ext4fs_dirhash, with utf8_casefold), even under
// versions 0..5; DirHash hashes the bytes it is given, so it does not
// answer for those directories. Version 6 (siphash) is keyed by the
// encryption key of a casefolded, encrypted directory and refused with
// ErrUnsupported; other versions and names longer than 255 bytes are
// refused with ErrCorrupt. DirHash never panics.
func DirHash(version uint8, seed [4]uint32, name []byte) (major, minor uint32, err error) {
	if len(name) > DirNameMax {
		return 0, 0, fmt.Errorf("%w: directory hash of a %d-byte name (names have at most %d)", ErrCorrupt, len(name), DirNameMax)
	}
	state := seed
	if seed == ([4]uint32{}) {
		state = dxDefaultSeed
	}
	switch version {
	case HashLegacy, HashLegacyUnsigned:
		major = legacyHash(name, version == HashLegacyUnsigned)
	case HashHalfMD4, HashHalfMD4Unsigned:
		// 32 bytes of name per transform; the MD4 state's second and
		// third words are the result.
		var in [8]uint32
		for p := name; len(p) > 0; p = p[min(len(p), 32):] {
			packHashWords(in[:], p, version == HashHalfMD4Unsigned)
			halfMD4(&state, &in)
		}
		major, minor = state[1], state[2]
	case HashTea, HashTeaUnsigned:
		// 16 bytes of name per TEA block, used as the key; the first
		// two words of the state are the result.
		var in [4]uint32
		for p := name; len(p) > 0; p = p[min(len(p), 16):] {
			packHashWords(in[:], p, version == HashTeaUnsigned)
			teaEncrypt(&state, &in)
		}
		major, minor = state[0], state[1]
	case HashSipHash:
		return 0, 0, fmt.Errorf("%w: siphash directory hash (version %d): it is keyed by the key of an encrypted, casefolded directory", ErrUnsupported, version)
	default:
		return 0, 0, fmt.Errorf("%w: unknown directory hash version %d", ErrCorrupt, version)
	}
	major &^= 1
	if major == dxHashEOF<<1 {
		major = (dxHashEOF - 1) << 1
	}
	return major, minor, nil
}

// DirHashVersion returns the hash version the kernel's lookup uses in an
// htree whose dx_root_info.hash_version is root, on this filesystem.
//
// dx_probe (fs/ext4/namei.c) accepts only legacy, half_md4 and tea in a
// root (and siphash in casefolded, encrypted directories); any other value
// makes it give up on the index, and the lookup then scans the directory
// linearly (__ext4_find_entry, on ERR_BAD_DX_DIR). It adds 3 to the
// version, selecting the unsigned-char variant, when s_hash_unsigned is
// set, which ext4_hash_info_init (fs/ext4/super.c) does when s_flags has
// EXT2_FLAGS_UNSIGNED_HASH, whatever EXT2_FLAGS_SIGNED_HASH says.
//
// With neither flag the choice depends on how the kernel was built
// (#ifdef __CHAR_UNSIGNED__ in ext4_hash_info_init): signed on x86 kernels
// before 6.2, unsigned on arm, powerpc or s390 and on every kernel since
// 6.2 (commit 3bc753c06dd0, "kbuild: treat char as always unsigned",
// builds with -funsigned-char; a 6.18 x86_64 kernel was seen to choose
// unsigned), and the first read-write mount writes the flag it chose.
// e2fsprogs (e2fsck -D) hashes signed in that case. Not knowing which
// kernel will mount the filesystem, DirHashVersion refuses it.
//
// The kernel reads an htree only when the filesystem has dir_index and the
// directory the index flag (is_dx, fs/ext4/ext4.h); callers check both.
func (sb *SuperBlock) DirHashVersion(root uint8) (uint8, error) {
	switch root {
	case HashLegacy, HashHalfMD4, HashTea:
	case HashSipHash:
		return 0, fmt.Errorf("%w: htree root with siphash (version %d): only casefolded, encrypted directories use it", ErrUnsupported, root)
	default:
		return 0, fmt.Errorf("%w: htree root hash version %d (the kernel accepts %d, %d or %d there and otherwise searches the directory linearly)",
			ErrCorrupt, root, HashLegacy, HashHalfMD4, HashTea)
	}
	switch {
	case sb.Flags&SbFlagUnsignedHash != 0:
		return root + 3, nil
	case sb.Flags&SbFlagSignedHash != 0:
		return root, nil
	}
	return 0, fmt.Errorf("%w: s_flags %#x says neither signed nor unsigned directory hash: the kernel that mounts it decides (signed before Linux 6.2 on x86, unsigned since); mount it read-write once so the kernel records its choice",
		ErrUnsupported, sb.Flags)
}

// hashChar is a name byte as the hash sees it: C's char widened to int,
// sign-extended unless the hash is an unsigned variant. Sums and products
// of these wrap modulo 2^32 as they do in the kernel's __u32 arithmetic.
func hashChar(b byte, unsigned bool) uint32 {
	if unsigned {
		return uint32(b)
	}
	return uint32(int32(int8(b)))
}

// legacyHash is dx_hack_hash (fs/ext4/hash.c), the hash of the first
// htree directories.
func legacyHash(name []byte, unsigned bool) uint32 {
	h0, h1 := uint32(0x12a3fe2d), uint32(0x37abe8f9)
	for _, b := range name {
		h := h1 + (h0 ^ (hashChar(b, unsigned) * 7152373))
		if h&0x80000000 != 0 {
			h -= 0x7fffffff
		}
		h0, h1 = h, h0
	}
	return h0 << 1
}

// packHashWords fills words with the start of p, the rest of the name, as
// str2hashbuf does (fs/ext4/hash.c): each group of four bytes is one
// big-endian word built by adding the (possibly sign-extended) bytes, so a
// negative byte borrows from the bytes before it. When the rest fits, a
// last, partial group is shifted in on top of the padding word, len(p) in
// each of its bytes, and the padding word fills the words left over.
func packHashWords(words []uint32, p []byte, unsigned bool) {
	pad := uint32(len(p)) | uint32(len(p))<<8
	pad |= pad << 16
	p = p[:min(len(p), 4*len(words))]
	i := 0
	for ; len(p) >= 4; i++ {
		words[i] = hashChar(p[0], unsigned)<<24 + hashChar(p[1], unsigned)<<16 +
			hashChar(p[2], unsigned)<<8 + hashChar(p[3], unsigned)
		p = p[4:]
	}
	if i < len(words) {
		w := pad
		for _, b := range p {
			w = w<<8 + hashChar(b, unsigned)
		}
		words[i] = w
		i++
	}
	for ; i < len(words); i++ {
		words[i] = pad
	}
}

// MD4's round constants (RFC 1320); the first round adds none. The kernel
// writes them in octal: 013240474631 and 015666365641 (fs/ext4/hash.c).
const (
	md4K2 = 0x5A827999
	md4K3 = 0x6ED9EBA1
)

// halfMD4Steps lists, per round, which input word and rotation each of the
// eight steps uses (half_md4_transform, fs/ext4/hash.c): MD4 cut down to
// eight words of input and eight steps a round.
var halfMD4Steps = [3][8]struct{ in, rot uint8 }{
	{{0, 3}, {1, 7}, {2, 11}, {3, 19}, {4, 3}, {5, 7}, {6, 11}, {7, 19}},
	{{1, 3}, {3, 5}, {5, 9}, {7, 13}, {0, 3}, {2, 5}, {4, 9}, {6, 13}},
	{{3, 3}, {7, 9}, {2, 11}, {6, 15}, {1, 3}, {5, 9}, {0, 11}, {4, 15}},
}

// halfMD4 mixes eight words of name into the state.
func halfMD4(state *[4]uint32, in *[8]uint32) {
	v := *state
	for round, steps := range halfMD4Steps {
		for j, s := range steps {
			// Step j updates a, d, c, b in turn (index 0, 3, 2, 1),
			// mixing in the other three in the order that follows it.
			t := (4 - j%4) % 4
			x, y, z := v[(t+1)%4], v[(t+2)%4], v[(t+3)%4]
			var f, k uint32
			switch round {
			case 0:
				f = z ^ (x & (y ^ z)) // selection
			case 1:
				f, k = (x&y)|(z&(x|y)), md4K2 // majority
			default:
				f, k = x^y^z, md4K3 // parity
			}
			v[t] = bits.RotateLeft32(v[t]+f+in[s.in]+k, int(s.rot))
		}
	}
	for i := range state {
		state[i] += v[i]
	}
}

// teaDelta is TEA's key schedule constant, 2^32 divided by the golden ratio.
const teaDelta = 0x9E3779B9

// teaEncrypt runs 16 TEA cycles on the first two state words, keyed by
// in, and adds the result back in (TEA_transform, fs/ext4/hash.c: a
// Davies-Meyer construction).
func teaEncrypt(state *[4]uint32, in *[4]uint32) {
	b0, b1 := state[0], state[1]
	var sum uint32
	for range 16 {
		sum += teaDelta
		b0 += (b1<<4 + in[0]) ^ (b1 + sum) ^ (b1>>5 + in[1])
		b1 += (b0<<4 + in[2]) ^ (b0 + sum) ^ (b0>>5 + in[3])
	}
	state[0] += b0
	state[1] += b1
}
