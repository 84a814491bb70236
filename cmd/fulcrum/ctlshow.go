package main

// How fulcrum ctl shows the admin API's answers: the status table, the
// events, and error answers (with a refused reload's problems).

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/fulcrumlb/fulcrum/config"
	"github.com/fulcrumlb/fulcrum/proxy"
)

// apiError is the admin API's error answer.
type apiError struct {
	Error    string `json:"error"`
	Problems []struct {
		File    string `json:"file"`
		Line    int    `json:"line"`
		Key     string `json:"key"`
		Message string `json:"message"`
	} `json:"problems"`
}

// printAPIError reports an error answer: its status, message and, for a
// refused reload, every problem of the file.
func printAPIError(w io.Writer, status int, answer []byte) {
	var e apiError
	if json.Unmarshal(answer, &e) != nil || e.Error == "" {
		// Not the admin API's answer (a proxy in between?): show its start.
		e.Error, _, _ = strings.Cut(strings.TrimSpace(string(answer)), "\n")
		if len(e.Error) > 200 {
			e.Error = e.Error[:200] + "…"
		}
		if e.Error == "" {
			e.Error = "no error message"
		}
	}
	fmt.Fprintf(w, "fulcrum ctl: %d %s: %s\n", status, http.StatusText(status), clean(e.Error))
	for _, p := range e.Problems {
		pr := config.Problem{File: clean(p.File), Line: p.Line, Key: clean(p.Key), Msg: clean(p.Message)}
		fmt.Fprintln(w, pr.Error())
	}
}

// clean replaces control characters in text from the server (a health
// check's detail may quote a real server's reply) so that it cannot move
// the cursor or break the table.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

// ctlStatus is GET /api/v1/status: the proxy's snapshot plus the rates the
// admin server adds to each service and real server.
type ctlStatus struct {
	Services []struct {
		proxy.ServiceStatus
		RequestRate float64 `json:"request_rate"`
		ErrorRate   float64 `json:"error_rate"`
		// RealServers shadows the embedded field of the same JSON name.
		RealServers []struct {
			proxy.RealServerStatus
			RequestRate float64 `json:"request_rate"`
			ErrorRate   float64 `json:"error_rate"`
		} `json:"real_servers"`
	} `json:"services"`
}

func showStatus(w io.Writer, answer []byte) error {
	var st ctlStatus
	if err := json.Unmarshal(answer, &st); err != nil {
		return err
	}
	if len(st.Services) == 0 {
		fmt.Fprintln(w, "no virtual services")
		return nil
	}
	for i, vs := range st.Services {
		if i > 0 {
			fmt.Fprintln(w)
		}
		// A pool has no listen address: routes reach it.
		where := strings.Join(vs.Listen, ",")
		if vs.Pool {
			where = "pool"
		}
		var fallback string
		if vs.Fallback != "" {
			fallback = ", fallback " + vs.Fallback
			if vs.FallbackActive {
				fallback += " [ACTIVE]"
			}
		}
		fmt.Fprintf(w, "SERVICE %s [%s] %s %s, active %d, queue %d, req/s %.1f, err/s %.1f%s\n",
			clean(vs.Name), strings.ToUpper(clean(vs.Color)), clean(vs.Mode), clean(where),
			vs.ActiveConns, vs.Queue, vs.RequestRate, vs.ErrorRate, clean(fallback))
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tADDRESS\tCOLOR\tHEALTH\tSTATE\tWEIGHT\tACTIVE\tREQUESTS\tLAST CHECK")
		for _, rs := range vs.RealServers {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\n", clean(rs.Name), clean(rs.Address),
				clean(rs.Color), clean(rs.Health), clean(rs.State), rs.EffectiveWeight, rs.Weight, rs.Active,
				rs.Requests, lastCheck(rs.Check))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// lastCheck describes a real server's last health check in one cell.
func lastCheck(c proxy.CheckStatus) string {
	s := c.Detail
	switch {
	case c.Time.IsZero() && s == "":
		s = "-"
	case s == "" && c.OK:
		s = "ok"
	case s == "":
		s = "failed"
	}
	if c.Agent != "" {
		s += " (agent: " + c.Agent + ")"
	}
	return clean(s)
}

func showEvents(w io.Writer, answer []byte) error {
	var ev struct {
		Events []proxy.Event `json:"events"`
	}
	if err := json.Unmarshal(answer, &ev); err != nil {
		return err
	}
	if len(ev.Events) == 0 {
		fmt.Fprintln(w, "no events")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tKIND\tTARGET\tMESSAGE")
	for _, e := range ev.Events {
		target := e.Service
		switch {
		case e.Service != "" && e.RealServer != "":
			target += "/" + e.RealServer
		case target == "":
			target = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Time.Local().Format(time.DateTime), clean(e.Kind), clean(target), clean(e.Message))
	}
	return tw.Flush()
}
