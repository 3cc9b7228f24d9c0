package worm

import (
	"time"

	"github.com/indelible-worm/indelible/revfs"
)

// FileStatus is one protected file in Status.
type FileStatus struct {
	Path      string `json:"path"`
	Inode     uint64 `json:"inode"`
	Size      int64  `json:"size"`      // newest size the host has made visible
	Coherent  int64  `json:"coherent"`  // prefix whose data has arrived and is coherent
	Committed int64  `json:"committed"` // bytes sealed and durable in the real log
	Pending   int64  `json:"pending"`   // Size - Committed
	Frozen    bool   `json:"frozen,omitempty"`
	// IdleMillis is how long since a write last touched the file.
	IdleMillis int64 `json:"idle_ms"`
	// Stalls are ranges holding the coherent prefix back that the host has
	// not written (see Config.Commit.LostAfter).
	Stalls []StallStatus `json:"stalls,omitempty"`
}

// Status is a snapshot of the device for `indelible status`.
type Status struct {
	Time       time.Time    `json:"time"`
	Serving    bool         `json:"serving"` // false in the last status a stopping server writes
	Files      []FileStatus `json:"files"`
	ReadOnly   bool         `json:"read_only"` // tripped by the readonly response
	Indicators int          `json:"indicators"`
	Notices    int          `json:"notices,omitempty"` // lost-write notices: ranges sealed as found
	LostAfter  Duration     `json:"lost_after"`        // commit.lost_after
	Recent     []Event      `json:"recent_events,omitempty"`
	SealError  string       `json:"seal_error,omitempty"`
	LastSeal   time.Time    `json:"last_seal,omitzero"`
	KeysUsed   int64        `json:"keys_used"`
	KeysTotal  int64        `json:"keys_total"`
}

// keyUser is implemented by sealers that can report keystream use.
type keyUser interface{ KeyUsage() (used, total int64) }

// Status returns a snapshot of the device.
func (d *Device) Status() Status {
	now := d.now()
	d.mu.Lock()
	st := Status{Time: now.UTC(), ReadOnly: d.tripped, LastSeal: d.lastSeal}
	if d.sealErr != nil {
		st.SealError = d.sealErr.Error()
	}
	files := d.eng.Files()
	frozen := make(map[revfs.FileID]bool, len(d.frozen))
	for k, v := range d.frozen {
		frozen[k] = v
	}
	stalls := map[revfs.FileID][]StallStatus{}
	for _, f := range files {
		stalls[f.ID] = d.stallStatus(f.ID, now)
	}
	d.mu.Unlock()
	for _, f := range files {
		c := d.sealer.Watermark(uint64(f.ID))
		st.Files = append(st.Files, FileStatus{
			Path: d.paths[f.ID], Inode: uint64(f.ID), Size: f.Size, Coherent: f.Coherent,
			Committed: c, Pending: max(f.Size-c, 0), Frozen: frozen[f.ID],
			IdleMillis: now.Sub(f.LastTouch).Milliseconds(), Stalls: stalls[f.ID],
		})
	}
	st.LostAfter = d.cfg.Commit.LostAfter
	st.Indicators, st.Notices, st.Recent = d.events.stats()
	if ku, ok := d.sealer.(keyUser); ok {
		st.KeysUsed, st.KeysTotal = ku.KeyUsage()
	}
	return st
}
