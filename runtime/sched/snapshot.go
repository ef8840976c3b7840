package sched

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Decision is one entry of the scheduler's log: what it did and why.
type Decision struct {
	Time time.Time `json:"time"`
	// Action is one of: discovery, placed, queued, evicting, evicted,
	// evict-failed, evict-unreleased, released, refused, timeout,
	// double-release, learned, over-budget.
	Action      string `json:"action"`
	Owner       Owner  `json:"owner"`
	Reservation uint64 `json:"reservation,omitempty"`
	Reason      string `json:"reason"`
}

func (s *Scheduler) decideLocked(d Decision) {
	d.Time = s.now().UTC().Round(0)
	s.log = append(s.log, d)
	if n := len(s.log) - s.cfg.LogSize; n > 0 {
		s.log = append(s.log[:0:0], s.log[n:]...)
	}
	s.cfg.Logger.Debug("gpu scheduler: "+d.Action, "owner", d.Owner.String(), "reason", d.Reason)
}

// Snapshot is the scheduler's state, JSON-serialisable: what `llmrt gpu`
// and GET /v1/system show.
type Snapshot struct {
	Time         time.Time         `json:"time"`
	Source       string            `json:"source"` // where GPU facts come from: nvml, ggml, cpu (none)
	Warnings     []string          `json:"warnings,omitempty"`
	Notes        []string          `json:"notes,omitempty"` // how each GPU was found, where its budget comes from
	Devices      []DeviceState     `json:"devices"`
	Consumers    []Consumer        `json:"consumers"`
	Reservations []ReservationInfo `json:"reservations"`
	Queue        []QueuedRequest   `json:"queue"`
	Decisions    []Decision        `json:"decisions"` // oldest first
	Stats        Stats             `json:"stats"`
}

// DeviceState is a device with its ledger.
type DeviceState struct {
	Device
	Reserved  int64 `json:"reserved"`
	Available int64 `json:"available"` // budget - reserved
}

// Consumer sums the reservations of one owner.
type Consumer struct {
	Owner        Owner            `json:"owner"`
	Reservations int              `json:"reservations"`
	Bytes        int64            `json:"bytes"`
	PerDevice    map[string]int64 `json:"per_device"`
}

// ReservationInfo describes one reservation.
type ReservationInfo struct {
	ID             uint64        `json:"id"`
	Owner          Owner         `json:"owner"`
	Kind           Kind          `json:"kind"`
	Reason         string        `json:"reason,omitempty"`
	PerDevice      []DeviceBytes `json:"per_device"`
	Bytes          int64         `json:"bytes"`
	Placement      *Placement    `json:"placement,omitempty"`
	Created        time.Time     `json:"created"`
	LastUsed       time.Time     `json:"last_used"`
	InUse          int           `json:"in_use"`
	Pinned         bool          `json:"pinned"`
	KeepAliveUntil time.Time     `json:"keep_alive_until"`
	Evictable      bool          `json:"evictable"`
	State          string        `json:"state"`
}

// QueuedRequest is a request waiting for memory.
type QueuedRequest struct {
	Position int           `json:"position"`
	Owner    Owner         `json:"owner"`
	Kind     Kind          `json:"kind"`
	Reason   string        `json:"reason,omitempty"`
	Since    time.Time     `json:"since"`
	Need     []DeviceBytes `json:"need"`
}

// Snapshot returns the current state.
func (s *Scheduler) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	utc := func(t time.Time) time.Time { return t.UTC().Round(0) }
	snap := Snapshot{
		Time: utc(now), Source: s.source, Warnings: slices.Clone(s.warnings), Notes: slices.Clone(s.notes),
		Consumers: []Consumer{}, Reservations: []ReservationInfo{}, Queue: []QueuedRequest{},
		Decisions: slices.Clone(s.log), Stats: s.stats,
	}
	for _, l := range s.ledgers {
		d := l.Device
		d.nvmlIndex = 0
		d.Processes = slices.Clone(d.Processes)
		snap.Devices = append(snap.Devices, DeviceState{Device: d, Reserved: l.reserved, Available: l.free()})
	}
	byOwner := map[Owner]*Consumer{}
	var owners []Owner
	for _, r := range s.sortedActiveLocked() {
		info := ReservationInfo{
			ID: r.id, Owner: r.owner, Kind: r.kind, Reason: r.reason,
			PerDevice: slices.Clone(r.perDevice), Bytes: r.Total(),
			Created: utc(r.created), LastUsed: utc(r.lastUsed), InUse: r.refs, Pinned: r.pinned,
			KeepAliveUntil: utc(r.keepDeadline()), Evictable: r.evictable(now), State: r.state(now),
		}
		if p, ok := r.Placement(); ok {
			info.Placement = &p
		}
		snap.Reservations = append(snap.Reservations, info)
		c := byOwner[r.owner]
		if c == nil {
			c = &Consumer{Owner: r.owner, PerDevice: map[string]int64{}}
			byOwner[r.owner] = c
			owners = append(owners, r.owner)
		}
		c.Reservations++
		c.Bytes += info.Bytes
		for _, d := range r.perDevice {
			c.PerDevice[d.Device] += d.Total()
		}
	}
	for _, o := range owners {
		snap.Consumers = append(snap.Consumers, *byOwner[o])
	}
	for i, w := range s.queue {
		q := QueuedRequest{Position: i + 1, Owner: w.req.Owner, Kind: w.req.Kind, Reason: w.req.Reason, Since: utc(w.enqueued)}
		if _, never, ideal := s.targetLocked(w); !never {
			q.Need = ideal
		}
		if q.Need == nil {
			q.Need = []DeviceBytes{}
		}
		snap.Queue = append(snap.Queue, q)
	}
	return snap
}

// Format renders a snapshot as text for terminals (`llmrt gpu`).
func Format(w io.Writer, snap Snapshot) error {
	var b strings.Builder
	fmt.Fprintf(&b, "GPU memory scheduler at %s (devices from %s)\n", snap.Time.Format(time.RFC3339), snap.Source)
	for _, n := range snap.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	for _, warn := range snap.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nDEVICE\tNAME\tTOTAL\tOTHERS\tMARGIN\tBUDGET\tRESERVED\tAVAILABLE\tUTIL")
	for _, d := range snap.Devices {
		name := d.Name
		if d.Backend != "" {
			name += " (" + d.Backend + ")"
		}
		if d.ComputeCapability != "" {
			name += " cc " + d.ComputeCapability
		}
		if d.PCIBusID != "" {
			name += " " + d.PCIBusID
		}
		util := "-"
		if d.UtilizationGPU >= 0 {
			util = fmt.Sprintf("%d%%", d.UtilizationGPU)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, name, FormatBytes(d.Total), FormatBytes(d.UsedByOthers),
			FormatBytes(d.Margin), FormatBytes(d.Budget), FormatBytes(d.Reserved), FormatBytes(d.Available), util)
	}
	tw.Flush()
	for _, d := range snap.Devices {
		for _, p := range d.Processes {
			fmt.Fprintf(&b, "  %s: process %d uses %s\n", d.ID, p.PID, FormatBytes(p.Bytes))
		}
	}

	b.WriteString("\nCONSUMERS\n")
	if len(snap.Consumers) == 0 {
		b.WriteString("  (none)\n")
	}
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, c := range snap.Consumers {
		var per []string
		for _, dev := range slices.Sorted(maps.Keys(c.PerDevice)) {
			per = append(per, fmt.Sprintf("%s %s", dev, FormatBytes(c.PerDevice[dev])))
		}
		fmt.Fprintf(tw, "  %s\t%d reservation(s)\t%s\t%s\n", c.Owner, c.Reservations, FormatBytes(c.Bytes), strings.Join(per, ", "))
	}
	tw.Flush()

	b.WriteString("\nRESERVATIONS\n")
	if len(snap.Reservations) == 0 {
		b.WriteString("  (none)\n")
	}
	for _, r := range snap.Reservations {
		fmt.Fprintf(&b, "  #%d %s [%s] %s: %s\n", r.ID, r.Owner, r.Kind, FormatBytes(r.Bytes), r.State)
		if r.Reason != "" {
			fmt.Fprintf(&b, "      reason: %s\n", r.Reason)
		}
		for _, d := range r.PerDevice {
			layers := ""
			if d.Layers > 0 {
				layers = fmt.Sprintf("%d layers, ", d.Layers)
			}
			fmt.Fprintf(&b, "      %s: %s%s\n", d.Device, layers, d.Breakdown)
		}
		if p := r.Placement; p != nil {
			fmt.Fprintf(&b, "      load with n_gpu_layers=%d main_gpu=%d tensor_split=%v\n", p.NGPULayers, p.MainGPU, p.TensorSplit)
		}
	}

	b.WriteString("\nQUEUE\n")
	if len(snap.Queue) == 0 {
		b.WriteString("  (empty)\n")
	}
	for _, q := range snap.Queue {
		fmt.Fprintf(&b, "  %d. %s [%s] waiting since %s, needs %s\n", q.Position, q.Owner, q.Kind,
			q.Since.Format(time.RFC3339), perDeviceString(q.Need))
	}

	b.WriteString("\nRECENT DECISIONS\n")
	for _, d := range snap.Decisions {
		who := d.Owner.String()
		if who != "" {
			who += ": "
		}
		fmt.Fprintf(&b, "  %s %-16s %s%s\n", d.Time.Format("15:04:05.000"), d.Action, who, d.Reason)
	}
	st := snap.Stats
	fmt.Fprintf(&b, "\nSTATS granted %d, released %d, queued %d, evicted %d (failed %d), refused %d, timed out %d, double releases %d\n",
		st.Granted, st.Released, st.Queued, st.Evictions, st.EvictFailures, st.Refused, st.TimedOut, st.DoubleReleases)
	_, err := io.WriteString(w, b.String())
	return err
}
