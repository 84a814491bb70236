package admin

import (
	"testing"
	"time"

	"github.com/fulcrumlb/fulcrum/proxy"
)

func TestSampler(t *testing.T) {
	st := func(svcReq, svcErr, rsReq, rs5xx, rsConnErr uint64) proxy.Status {
		return proxy.Status{Services: []proxy.ServiceStatus{{
			Name: "web", Requests: svcReq, Errors: svcErr,
			RealServers: []proxy.RealServerStatus{{
				Name: "web1", Requests: rsReq, Responses: proxy.ResponseClasses{C5xx: rs5xx}, ConnectErrors: rsConnErr,
			}},
		}}}
	}
	t0 := time.Unix(1000, 0)
	type obs struct {
		at time.Duration
		st proxy.Status
	}
	tests := []struct {
		name                         string
		obs                          []obs
		svcReq, svcErr, rsReq, rsErr float64
	}{
		{name: "no samples"},
		{name: "one sample", obs: []obs{{0, st(10, 0, 10, 0, 0)}}},
		{name: "two samples", obs: []obs{{0, st(0, 0, 0, 0, 0)}, {time.Second, st(10, 1, 8, 1, 1)}},
			svcReq: 10, svcErr: 1, rsReq: 8, rsErr: 2},
		{name: "window of five seconds", obs: []obs{
			{0, st(0, 0, 0, 0, 0)}, // falls out of the window
			{1 * time.Second, st(100, 0, 0, 0, 0)},
			{2 * time.Second, st(110, 0, 0, 0, 0)},
			{3 * time.Second, st(120, 0, 0, 0, 0)},
			{4 * time.Second, st(130, 0, 0, 0, 0)},
			{5 * time.Second, st(140, 0, 0, 0, 0)},
			{6 * time.Second, st(150, 0, 0, 0, 0)},
		}, svcReq: 10},
		{name: "counter reset", obs: []obs{{0, st(100, 5, 100, 5, 0)}, {time.Second, st(3, 0, 3, 0, 0)}}},
		{name: "server appears", obs: []obs{
			{0, proxy.Status{Services: []proxy.ServiceStatus{{Name: "web"}}}},
			{2 * time.Second, st(20, 0, 20, 0, 0)},
		}, svcReq: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSampler(rateWindow)
			for _, o := range tt.obs {
				s.observe(t0.Add(o.at), o.st)
			}
			r := s.rates()
			svc, rs := r.services["web"], r.servers[serverKey{"web", "web1"}]
			if svc.requests != tt.svcReq || svc.errors != tt.svcErr || rs.requests != tt.rsReq || rs.errors != tt.rsErr {
				t.Errorf("rates: service %+v, real server %+v; want %v/%v, %v/%v",
					svc, rs, tt.svcReq, tt.svcErr, tt.rsReq, tt.rsErr)
			}
			if len(s.samples) > 6 {
				t.Errorf("%d samples kept", len(s.samples))
			}
		})
	}
}
