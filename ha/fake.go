package ha

import (
	"fmt"
	"net/netip"
	"sync"
)

// FakeAddresses is an AddressManager that only records: which addresses
// it holds and the calls made, for tests and until the netlink one exists.
// Its zero value is ready; it is safe for concurrent use.
type FakeAddresses struct {
	mu    sync.Mutex
	held  map[netip.Prefix]bool
	calls []string
}

// AddVIPs records the addresses as held.
func (f *FakeAddresses) AddVIPs(vips []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.held == nil {
		f.held = make(map[netip.Prefix]bool)
	}
	for _, p := range vips {
		f.held[p] = true
	}
	f.calls = append(f.calls, fmt.Sprint("add ", vips))
	return nil
}

// RemoveVIPs records the addresses as no longer held.
func (f *FakeAddresses) RemoveVIPs(vips []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range vips {
		delete(f.held, p)
	}
	f.calls = append(f.calls, fmt.Sprint("remove ", vips))
	return nil
}

// Announce records the call.
func (f *FakeAddresses) Announce(vips []netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprint("announce ", vips))
	return nil
}

// Held reports whether all of vips are held (false for none).
func (f *FakeAddresses) Held(vips ...netip.Prefix) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range vips {
		if !f.held[p] {
			return false
		}
	}
	return len(vips) > 0
}

// Calls returns the calls made so far, as "add [10.0.0.21/24]",
// "announce [...]", "remove [...]".
func (f *FakeAddresses) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}
