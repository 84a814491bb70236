package l4

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/cloudflare/ipvs"
)

// fakeIPVS is an ipvs.Client that keeps services in memory and answers as the
// kernel does (ip_vs_ctl.c): EEXIST for a duplicate, ESRCH for a missing
// service, ENOENT for a missing destination, the "hashed" flag on services.
// It logs every change it is asked for.
type fakeIPVS struct {
	svcs []*fakeService
	ops  []string
	// fail makes the named operation ("CreateService", …) fail with err.
	fail map[string]error
}

type fakeService struct {
	svc   ipvs.Service
	dests []ipvs.Destination
}

var _ ipvs.Client = (*fakeIPVS)(nil)

func newFakeIPVS() *fakeIPVS { return &fakeIPVS{fail: map[string]error{}} }

func (f *fakeIPVS) find(s ipvs.Service) (int, *fakeService) {
	for i, fs := range f.svcs {
		if fs.svc.Address == s.Address && fs.svc.Port == s.Port && fs.svc.Protocol == s.Protocol && fs.svc.FWMark == s.FWMark {
			return i, fs
		}
	}
	return -1, nil
}

func (f *fakeIPVS) op(name string, s ipvs.Service, d *ipvs.Destination) error {
	desc := fmt.Sprintf("%s %v %s", name, s.Protocol, netip.AddrPortFrom(s.Address, s.Port))
	if d != nil {
		desc += " " + netip.AddrPortFrom(d.Address, d.Port).String()
	}
	if err := f.fail[name]; err != nil {
		return err
	}
	if !strings.HasPrefix(name, "Get") {
		f.ops = append(f.ops, desc)
	}
	return nil
}

func (f *fakeIPVS) Info() (ipvs.Info, error)           { return ipvs.Info{Version: [3]int{1, 2, 1}}, nil }
func (f *fakeIPVS) Config() (ipvs.Config, error)       { return ipvs.Config{}, nil }
func (f *fakeIPVS) SetConfig(config ipvs.Config) error { return nil }

func (f *fakeIPVS) Services() ([]ipvs.ServiceExtended, error) {
	if err := f.fail["Services"]; err != nil {
		return nil, err
	}
	var out []ipvs.ServiceExtended
	for _, fs := range f.svcs {
		s := fs.svc
		s.Flags |= ipvs.ServiceHashed
		out = append(out, ipvs.ServiceExtended{Service: s})
	}
	if len(out) == 0 {
		return nil, os.ErrNotExist // as the ipvs package reports an empty dump
	}
	return out, nil
}

func (f *fakeIPVS) Service(s ipvs.Service) (ipvs.ServiceExtended, error) {
	if _, fs := f.find(s); fs != nil {
		return ipvs.ServiceExtended{Service: fs.svc}, nil
	}
	return ipvs.ServiceExtended{}, syscall.ESRCH
}

func (f *fakeIPVS) CreateService(s ipvs.Service) error {
	if err := f.op("CreateService", s, nil); err != nil {
		return err
	}
	if _, fs := f.find(s); fs != nil {
		return syscall.EEXIST
	}
	if !s.Netmask.IsValid() {
		return syscall.EINVAL // ip_vs_genl_parse_service wants a netmask
	}
	f.svcs = append(f.svcs, &fakeService{svc: s})
	return nil
}

func (f *fakeIPVS) UpdateService(s ipvs.Service) error {
	if err := f.op("UpdateService", s, nil); err != nil {
		return err
	}
	_, fs := f.find(s)
	if fs == nil {
		return syscall.ESRCH
	}
	fs.svc = s
	return nil
}

func (f *fakeIPVS) RemoveService(s ipvs.Service) error {
	if err := f.op("RemoveService", s, nil); err != nil {
		return err
	}
	i, fs := f.find(s)
	if fs == nil {
		return syscall.ESRCH
	}
	f.svcs = slices.Delete(f.svcs, i, i+1)
	return nil
}

func (f *fakeIPVS) Destinations(s ipvs.Service) ([]ipvs.DestinationExtended, error) {
	if err := f.fail["Destinations"]; err != nil {
		return nil, err
	}
	_, fs := f.find(s)
	var out []ipvs.DestinationExtended
	if fs != nil {
		for _, d := range fs.dests {
			out = append(out, ipvs.DestinationExtended{Destination: d})
		}
	}
	if len(out) == 0 {
		return nil, os.ErrNotExist // no such service, or no destinations
	}
	return out, nil
}

// dest records op and finds d in s: the service (ESRCH when it does not
// exist) and d's index in it, -1 when it has no such destination.
func (f *fakeIPVS) dest(op string, s ipvs.Service, d ipvs.Destination) (*fakeService, int, error) {
	if err := f.op(op, s, &d); err != nil {
		return nil, -1, err
	}
	_, fs := f.find(s)
	if fs == nil {
		return nil, -1, syscall.ESRCH
	}
	return fs, slices.IndexFunc(fs.dests, func(x ipvs.Destination) bool { return x.Address == d.Address && x.Port == d.Port }), nil
}

func (f *fakeIPVS) CreateDestination(s ipvs.Service, d ipvs.Destination) error {
	fs, i, err := f.dest("CreateDestination", s, d)
	switch {
	case err != nil:
		return err
	case i >= 0:
		return syscall.EEXIST
	}
	fs.dests = append(fs.dests, d)
	return nil
}

func (f *fakeIPVS) UpdateDestination(s ipvs.Service, d ipvs.Destination) error {
	fs, i, err := f.dest("UpdateDestination", s, d)
	switch {
	case err != nil:
		return err
	case i < 0:
		return syscall.ENOENT
	}
	fs.dests[i] = d
	return nil
}

func (f *fakeIPVS) RemoveDestination(s ipvs.Service, d ipvs.Destination) error {
	fs, i, err := f.dest("RemoveDestination", s, d)
	switch {
	case err != nil:
		return err
	case i < 0:
		return syscall.ENOENT
	}
	fs.dests = slices.Delete(fs.dests, i, i+1)
	return nil
}
