package layout

import (
	"bytes"
	"errors"
	"testing"
)

// dxPattern is the name of n bytes start, start+step, ... (skipping NUL,
// CR and LF, which debugfs cannot take) that the vectors below were
// computed for.
func dxPattern(n int, start, step byte) string {
	b := make([]byte, 0, n)
	c := start
	for range n {
		if c == 0 || c == '\n' || c == '\r' {
			c++
		}
		b = append(b, c)
		c += step
	}
	return string(b)
}

// dxVectorSeeds are the seeds of the vectors: all zero (the default seed
// applies) and an arbitrary one.
var dxVectorSeeds = [2][4]uint32{{}, {0x01234567, 0x89abcdef, 0xdeadbeef, 0x00000001}}

// TestDirHashVectors checks DirHash against hashes that debugfs 1.47.0
// computed (dx_hash -h VERSION -s SEED -- NAME), for every version 0..5:
// names of 1 to 255 bytes that end inside, at and past the 16-byte (tea)
// and 32-byte (half_md4) chunks, with bytes of 0x80 and more, whose signed
// and unsigned variants differ. TestDirHashMatchesDebugfs checks many
// random names the same way when debugfs is installed; these run anywhere.
func TestDirHashVectors(t *testing.T) {
	for _, tc := range []struct {
		seed int
		name string
		want [6][2]uint32 // major, minor for versions 0..5
	}{
		{0, "foo", [6][2]uint32{{0x9f57ef58, 0x00000000}, {0x74c657ac, 0x85a8d812}, {0x901b3376, 0x4878f6ae}, {0x9f57ef58, 0x00000000}, {0x74c657ac, 0x85a8d812}, {0x901b3376, 0x4878f6ae}}},
		{0, "lost+found", [6][2]uint32{{0x5e2aba24, 0x00000000}, {0x591de422, 0x6ffc56e0}, {0x2dbf9e80, 0xbfebee4f}, {0x5e2aba24, 0x00000000}, {0x591de422, 0x6ffc56e0}, {0x2dbf9e80, 0xbfebee4f}}},
		{0, "\xff", [6][2]uint32{{0x49ba183e, 0x00000000}, {0x4421bc04, 0x2974faeb}, {0xb7e8b4ec, 0x98edfcfe}, {0x6b842a40, 0x00000000}, {0xd77d96d6, 0xcafda2d2}, {0xc6854b30, 0xfaee7448}}},
		{0, "abc\x80", [6][2]uint32{{0xc1805f62, 0x00000000}, {0x73a49c04, 0x67befcb7}, {0x0979dc68, 0xa7dd014e}, {0xf29ab962, 0x00000000}, {0xd5d067aa, 0x4768900a}, {0x7b00a814, 0xbe68e332}}},
		{0, "\x80\x81\x82\x83\x84", [6][2]uint32{{0xa1c3585a, 0x00000000}, {0x8bab0498, 0xc326632d}, {0x21e3a154, 0x90112c3d}, {0x9fd41058, 0x00000000}, {0xbc48596e, 0xde0fad41}, {0x9b648616, 0x011dd507}}},
		{0, "été.log", [6][2]uint32{{0x138345c0, 0x00000000}, {0xb6b721c6, 0xcd9fac54}, {0x96079988, 0x12e445d7}, {0x517f19ba, 0x00000000}, {0x8139f2d0, 0x9fa4614e}, {0x9a70d216, 0x9de9893b}}},
		{0, dxPattern(15, 0x70, 7), [6][2]uint32{{0xaee0643a, 0x00000000}, {0x7c3c7964, 0xc14df252}, {0x0f72b9ae, 0x4ec577bb}, {0x725bcb7c, 0x00000000}, {0x966c013c, 0x531f40d5}, {0xa08b3386, 0x6f732557}}},
		{0, dxPattern(16, 0x79, 13), [6][2]uint32{{0xf5fbd672, 0x00000000}, {0xdf5a87a2, 0x61e4c4a2}, {0xea46c08c, 0x927bb584}, {0x8fa73c08, 0x00000000}, {0x6427ce00, 0x9885836b}, {0xfb01811c, 0xc4375bcd}}},
		{0, dxPattern(17, 0x7e, 29), [6][2]uint32{{0x8239ec1e, 0x00000000}, {0x61bb771e, 0x98300371}, {0xa08a050c, 0x65f6e052}, {0xaaf81bd0, 0x00000000}, {0x7250715a, 0x48c1a0c3}, {0x983896da, 0xe5e90ff5}}},
		{0, dxPattern(31, 0x41, 37), [6][2]uint32{{0x9d1f5518, 0x00000000}, {0xeb61c2a6, 0x2f4a9733}, {0xfb94e12e, 0xabe1ee69}, {0x3863ea84, 0x00000000}, {0x42bb7e74, 0xcaee7891}, {0x836332ae, 0xadcb69a5}}},
		{0, dxPattern(32, 0x90, 11), [6][2]uint32{{0xcb8b8566, 0x00000000}, {0xc6792856, 0xc3c17d15}, {0x61434e84, 0x260826e1}, {0x4576a630, 0x00000000}, {0x775d3e44, 0x6ea2d305}, {0x2584f13e, 0x2c3ef94e}}},
		{0, dxPattern(33, 0x20, 53), [6][2]uint32{{0xf9c0d4d8, 0x00000000}, {0xe8bce904, 0x5be4156a}, {0xe34cdfe2, 0x83fd52b4}, {0x9e331ebe, 0x00000000}, {0x18d4effa, 0x62e16471}, {0x3afba4b8, 0x1670b463}}},
		{0, dxPattern(64, 0xc0, 3), [6][2]uint32{{0x82cca1b0, 0x00000000}, {0x7ada6324, 0xc3fd2632}, {0x2dc7d31a, 0x7f2194c3}, {0x7d35da94, 0x00000000}, {0xda762834, 0xdacd28ed}, {0xa7dba4b8, 0xd372f555}}},
		{0, dxPattern(100, 0x7f, 1), [6][2]uint32{{0x4a91c1c2, 0x00000000}, {0x66df938e, 0x6e530823}, {0x93d5dc78, 0x68e888a7}, {0xa967ea4a, 0x00000000}, {0xd5bcc966, 0x6fd13e31}, {0x4a6cdc14, 0xb867710d}}},
		{0, dxPattern(255, 1, 1), [6][2]uint32{{0x664195f8, 0x00000000}, {0x13ab82e8, 0x8db0b745}, {0xe407d3c0, 0x45be3269}, {0xe69bc3a8, 0x00000000}, {0xbf5d20f4, 0x17374c68}, {0x2409ab4a, 0x765b9c4e}}},
		{0, dxPattern(254, 0xfe, 255), [6][2]uint32{{0x080e7890, 0x00000000}, {0x3b0210c4, 0xacb169e3}, {0xc3ae287a, 0x0a682052}, {0x7cc2b82a, 0x00000000}, {0x127569fc, 0x22707a94}, {0x67ef32be, 0x689ad05d}}},
		{1, "foo", [6][2]uint32{{0x9f57ef58, 0x00000000}, {0x4760aa40, 0x560aa814}, {0xaf6c8d58, 0xc0ff9d2a}, {0x9f57ef58, 0x00000000}, {0x4760aa40, 0x560aa814}, {0xaf6c8d58, 0xc0ff9d2a}}},
		{1, "lost+found", [6][2]uint32{{0x5e2aba24, 0x00000000}, {0x7f44ff40, 0xca8abb14}, {0xbb0625d4, 0xc9edaefe}, {0x5e2aba24, 0x00000000}, {0x7f44ff40, 0xca8abb14}, {0xbb0625d4, 0xc9edaefe}}},
		{1, "\xff", [6][2]uint32{{0x49ba183e, 0x00000000}, {0x85761d6c, 0x6a3ac90a}, {0xde14f8cc, 0xaa4a02f8}, {0x6b842a40, 0x00000000}, {0x8249fc80, 0x9bf7a821}, {0xa92b6d82, 0x1484a574}}},
		{1, "abc\x80", [6][2]uint32{{0xc1805f62, 0x00000000}, {0x2fb3a744, 0xd7307a67}, {0xba7ac7d8, 0x824ae592}, {0xf29ab962, 0x00000000}, {0x34b3face, 0x8f6f5f05}, {0x43b7b1de, 0x1a6b49da}}},
		{1, "\x80\x81\x82\x83\x84", [6][2]uint32{{0xa1c3585a, 0x00000000}, {0xf68e36de, 0x0e6c15ea}, {0xa1cb3a02, 0xc3409a07}, {0x9fd41058, 0x00000000}, {0x0b1efe5e, 0x94c0a226}, {0xd4638b1a, 0x088bb7c2}}},
		{1, "été.log", [6][2]uint32{{0x138345c0, 0x00000000}, {0xd5867eb6, 0xc3325642}, {0x54758654, 0xfe1bf3b9}, {0x517f19ba, 0x00000000}, {0x35f491ea, 0x896126b3}, {0x19afcef4, 0x63c5661a}}},
		{1, dxPattern(15, 0x70, 7), [6][2]uint32{{0xaee0643a, 0x00000000}, {0x1f21b38e, 0xfc429438}, {0x66a3e72a, 0x29c42c57}, {0x725bcb7c, 0x00000000}, {0x0450f15e, 0x3a382011}, {0x5cb5eecc, 0x19349c4d}}},
		{1, dxPattern(16, 0x79, 13), [6][2]uint32{{0xf5fbd672, 0x00000000}, {0x95b18178, 0x7a1795cc}, {0xd1c87e68, 0x59943852}, {0x8fa73c08, 0x00000000}, {0x571d1284, 0xcb9c2739}, {0x58e19ee8, 0xee640557}}},
		{1, dxPattern(17, 0x7e, 29), [6][2]uint32{{0x8239ec1e, 0x00000000}, {0x89c1f03a, 0x5c88b574}, {0x6c784f52, 0x6b6d15f2}, {0xaaf81bd0, 0x00000000}, {0xd8ce27fc, 0xae6fbab0}, {0xe29fb642, 0x57fefae0}}},
		{1, dxPattern(31, 0x41, 37), [6][2]uint32{{0x9d1f5518, 0x00000000}, {0x7fe0da2a, 0xc5106a74}, {0xedda7758, 0x5e8ffa08}, {0x3863ea84, 0x00000000}, {0x45ab393a, 0xdbc230a0}, {0x86059a48, 0x2612d7ec}}},
		{1, dxPattern(32, 0x90, 11), [6][2]uint32{{0xcb8b8566, 0x00000000}, {0xf9ba6ac0, 0xb65c02ad}, {0xfaf5361a, 0x53ac1f65}, {0x4576a630, 0x00000000}, {0xa7165346, 0xaee34b20}, {0xaff62876, 0x77535e5b}}},
		{1, dxPattern(33, 0x20, 53), [6][2]uint32{{0xf9c0d4d8, 0x00000000}, {0xedb17828, 0x95d57b62}, {0x558d91ce, 0xdde4e046}, {0x9e331ebe, 0x00000000}, {0x55685a10, 0xfbc76ac8}, {0x78963f3c, 0xce41ba57}}},
		{1, dxPattern(64, 0xc0, 3), [6][2]uint32{{0x82cca1b0, 0x00000000}, {0x88351638, 0x75e996eb}, {0x2000a188, 0xa59ccf2c}, {0x7d35da94, 0x00000000}, {0xe25eea68, 0x9c03520f}, {0xd476d4ba, 0x1a4bbd0e}}},
		{1, dxPattern(100, 0x7f, 1), [6][2]uint32{{0x4a91c1c2, 0x00000000}, {0xda4a7ba6, 0xa5ff61cb}, {0x1681b99e, 0xec2c6e90}, {0xa967ea4a, 0x00000000}, {0xca4bb4ee, 0x7f3a2ec3}, {0xa05220ac, 0xc60502be}}},
		{1, dxPattern(255, 1, 1), [6][2]uint32{{0x664195f8, 0x00000000}, {0x3c03e190, 0x0727dc50}, {0xb642db42, 0x374f754d}, {0xe69bc3a8, 0x00000000}, {0x37d4a3fe, 0xbf2b6e16}, {0xe81a6520, 0xc3064405}}},
		{1, dxPattern(254, 0xfe, 255), [6][2]uint32{{0x080e7890, 0x00000000}, {0xd9788cf2, 0x84421e4b}, {0x26d32320, 0x1b48600e}, {0x7cc2b82a, 0x00000000}, {0x28e27e52, 0x9d149292}, {0xcec80262, 0x435dcb3f}}},
	} {
		for v, want := range tc.want {
			major, minor, err := DirHash(uint8(v), dxVectorSeeds[tc.seed], []byte(tc.name))
			if err != nil || major != want[0] || minor != want[1] {
				t.Errorf("DirHash(%d, seed %d, %q) = %#08x, %#08x, %v; debugfs says %#08x, %#08x",
					v, tc.seed, tc.name, major, minor, err, want[0], want[1])
			}
		}
	}
}

// TestDirHashEOF: a name whose hash would be 0xFFFFFFFE, the 32-bit
// end-of-directory position, gets 0xFFFFFFFC as in ext4fs_dirhash
// (fs/ext4/hash.c). The name was found by search; debugfs, which lacks the
// exception, reports 0xFFFFFFFE for it.
func TestDirHashEOF(t *testing.T) {
	for _, v := range []uint8{HashLegacy, HashLegacyUnsigned} {
		major, _, err := DirHash(v, [4]uint32{}, []byte("eof-8T#&A"))
		if err != nil || major != 0xFFFFFFFC {
			t.Errorf("version %d: major %#08x, %v; want 0xfffffffc", v, major, err)
		}
	}
}

func TestDirHashErrors(t *testing.T) {
	long := bytes.Repeat([]byte{'x'}, DirNameMax+1)
	for _, tc := range []struct {
		version uint8
		name    []byte
		want    error
	}{
		{HashSipHash, []byte("foo"), ErrUnsupported},
		{7, []byte("foo"), ErrCorrupt},
		{255, []byte("foo"), ErrCorrupt},
		{HashHalfMD4, long, ErrCorrupt},
		{HashLegacy, long, ErrCorrupt},
		{HashSipHash, long, ErrCorrupt},
	} {
		major, minor, err := DirHash(tc.version, [4]uint32{1, 2, 3, 4}, tc.name)
		if !errors.Is(err, tc.want) || major != 0 || minor != 0 {
			t.Errorf("DirHash(%d, %d-byte name) = %#x, %#x, %v; want an error wrapping %v", tc.version, len(tc.name), major, minor, err, tc.want)
		}
	}
	// The longest name and the empty one (which no entry has) hash.
	for v := uint8(0); v <= HashTeaUnsigned; v++ {
		for _, n := range [][]byte{long[:DirNameMax], nil} {
			if _, _, err := DirHash(v, [4]uint32{}, n); err != nil {
				t.Errorf("DirHash(%d, %d-byte name): %v", v, len(n), err)
			}
		}
	}
}

// TestPackHashWords pins str2hashbuf's packing (fs/ext4/hash.c): the
// padding word repeats the length of what remains of the name, a partial
// last group is shifted in on top of it, and a signed byte of 0x80 or more
// borrows from the bytes before it.
func TestPackHashWords(t *testing.T) {
	const (
		pad1 = 0x01010101
		pad4 = 0x04040404
		pad5 = 0x05050505
	)
	for _, tc := range []struct {
		name     string
		n        int
		unsigned bool
		want     []uint32
	}{
		{"abcde", 8, false, []uint32{0x61626364, 0x05050565, pad5, pad5, pad5, pad5, pad5, pad5}},
		{"abcd", 4, false, []uint32{0x61626364, pad4, pad4, pad4}},
		{"a\x80bc", 4, false, []uint32{0x60806263, pad4, pad4, pad4}},
		{"a\x80bc", 4, true, []uint32{0x61806263, pad4, pad4, pad4}},
		{"\xff", 4, false, []uint32{0x010100FF, pad1, pad1, pad1}},
		{"\xff", 4, true, []uint32{0x010101FF, pad1, pad1, pad1}},
		// Only the first 32 bytes are packed; the padding (0x28) is unused.
		{"0123456789abcdefghijklmnopqrstuvwxyzABCD", 8, false,
			[]uint32{0x30313233, 0x34353637, 0x38396162, 0x63646566, 0x6768696a, 0x6b6c6d6e, 0x6f707172, 0x73747576}},
	} {
		got := make([]uint32, tc.n)
		packHashWords(got, []byte(tc.name), tc.unsigned)
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("packHashWords(%q, %d words, unsigned %v) = %#08x; want %#08x", tc.name, tc.n, tc.unsigned, got, tc.want)
				break
			}
		}
	}
}

func TestDirHashVersion(t *testing.T) {
	for _, tc := range []struct {
		root  uint8
		flags uint32
		want  uint8
		err   error
	}{
		{HashLegacy, SbFlagSignedHash, HashLegacy, nil},
		{HashHalfMD4, SbFlagSignedHash, HashHalfMD4, nil},
		{HashTea, SbFlagSignedHash | SbFlagTestFS, HashTea, nil},
		{HashLegacy, SbFlagUnsignedHash, HashLegacyUnsigned, nil},
		{HashHalfMD4, SbFlagUnsignedHash, HashHalfMD4Unsigned, nil},
		{HashTea, SbFlagUnsignedHash, HashTeaUnsigned, nil},
		// ext4_hash_info_init tests the unsigned flag first.
		{HashHalfMD4, SbFlagSignedHash | SbFlagUnsignedHash, HashHalfMD4Unsigned, nil},
		// Neither flag: the kernel's build decides.
		{HashHalfMD4, 0, 0, ErrUnsupported},
		{HashHalfMD4, SbFlagTestFS, 0, ErrUnsupported},
		// dx_probe refuses the unsigned versions and unknown ones in a root.
		{HashLegacyUnsigned, SbFlagSignedHash, 0, ErrCorrupt},
		{HashHalfMD4Unsigned, SbFlagUnsignedHash, 0, ErrCorrupt},
		{HashTeaUnsigned, SbFlagSignedHash, 0, ErrCorrupt},
		{7, SbFlagSignedHash, 0, ErrCorrupt},
		{255, SbFlagUnsignedHash, 0, ErrCorrupt},
		{HashSipHash, SbFlagSignedHash, 0, ErrUnsupported},
	} {
		sb := &SuperBlock{Flags: tc.flags}
		got, err := sb.DirHashVersion(tc.root)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("DirHashVersion(root %d, s_flags %#x) = %d, %v; want %d, %v", tc.root, tc.flags, got, err, tc.want, tc.err)
		}
	}
}

// FuzzDirHash: any version, seed and name hashes without panicking, the
// same way twice, with major's low bit clear and never the end-of-directory
// value; it fails exactly for names over 255 bytes and versions other than
// 0..5. It also checks what follows from the algorithms: an all-zero seed
// is the default seed, the legacy hash ignores the seed and has no minor,
// and signed and unsigned variants agree on names of bytes below 0x80.
func FuzzDirHash(f *testing.F) {
	f.Add(uint8(HashHalfMD4), uint32(0), uint32(0), uint32(0), uint32(0), []byte("app.log"))
	f.Add(uint8(HashTea), uint32(1), uint32(2), uint32(3), uint32(4), []byte("\xff\x80abc"))
	f.Add(uint8(HashLegacy), uint32(0), uint32(0), uint32(0), uint32(0), []byte("eof-8T#&A"))
	f.Add(uint8(HashSipHash), uint32(0), uint32(0), uint32(0), uint32(0), []byte("x"))
	f.Add(uint8(HashTeaUnsigned), uint32(9), uint32(0), uint32(0), uint32(0), []byte(dxPattern(255, 1, 1)))
	f.Add(uint8(HashHalfMD4Unsigned), uint32(0), uint32(0), uint32(0), uint32(7), []byte(dxPattern(256, 0x80, 1)))
	f.Fuzz(func(t *testing.T, version uint8, s0, s1, s2, s3 uint32, name []byte) {
		seed := [4]uint32{s0, s1, s2, s3}
		major, minor, err := DirHash(version, seed, name)
		switch {
		case len(name) > DirNameMax:
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%d-byte name: err %v, want ErrCorrupt", len(name), err)
			}
			return
		case version == HashSipHash:
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("siphash: err %v, want ErrUnsupported", err)
			}
			return
		case version > HashTeaUnsigned:
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("version %d: err %v, want ErrCorrupt", version, err)
			}
			return
		case err != nil:
			t.Fatalf("version %d, %d-byte name: %v", version, len(name), err)
		}
		if major&1 != 0 || major == dxHashEOF<<1 {
			t.Fatalf("major %#08x: low bit set or end of directory", major)
		}
		if m2, n2, _ := DirHash(version, seed, name); m2 != major || n2 != minor {
			t.Fatalf("not deterministic: %#x/%#x then %#x/%#x", major, minor, m2, n2)
		}
		if seed == ([4]uint32{}) {
			if m2, n2, _ := DirHash(version, dxDefaultSeed, name); m2 != major || n2 != minor {
				t.Fatalf("zero seed gives %#x/%#x, the default seed %#x/%#x", major, minor, m2, n2)
			}
		}
		if version%3 == HashLegacy {
			if m2, _, _ := DirHash(version, [4]uint32{}, name); m2 != major || minor != 0 {
				t.Fatalf("legacy hash depends on the seed or has a minor: %#x/%#x vs %#x", major, minor, m2)
			}
		}
		ascii := true
		for _, b := range name {
			ascii = ascii && b < 0x80
		}
		if other := version%3 + 3*(1-version/3); ascii {
			if m2, n2, _ := DirHash(other, seed, name); m2 != major || n2 != minor {
				t.Fatalf("versions %d and %d differ on %q: %#x/%#x vs %#x/%#x", version, other, name, major, minor, m2, n2)
			}
		}
	})
}
