package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fulcrumlb/fulcrum/ha"
)

// prepareHA is `fulcrum ctl ha status|takeover|release|auto`.
func prepareHA(args []string) (ctlCall, error) {
	if err := wantArgs(args, 1, 1); err != nil {
		return ctlCall{}, err
	}
	switch args[0] {
	case "status":
		return ctlCall{method: http.MethodGet, path: "/api/v1/ha", show: showHA}, nil
	case "takeover", "release", "auto":
		return ctlCall{method: http.MethodPost, path: "/api/v1/ha/" + args[0], show: showHA}, nil
	}
	return ctlCall{}, fmt.Errorf("ha: unknown subcommand %q: want status, takeover, release or auto", args[0])
}

// showHA prints the group: a summary line, then one line per family.
func showHA(w io.Writer, answer []byte) error {
	var st ha.Status
	if err := json.Unmarshal(answer, &st); err != nil {
		return fmt.Errorf("ha status: %w", err)
	}
	fmt.Fprintf(w, "HA: %s (%s)  interface %s  vrid %d  priority %d", haTitle(st.State), haRole(st.State),
		st.Interface, st.VRID, st.Priority)
	if st.Override != "" {
		fmt.Fprintf(w, "  override %s", st.Override)
	}
	if st.TrackedDown {
		fmt.Fprint(w, "  tracked service down")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FAMILY\tSTATE\tSINCE\tPRIORITY\tMASTER\tPEER\tFLOATING IPS")
	for _, f := range st.Families {
		since := "-"
		if !f.Since.IsZero() {
			since = f.Since.Local().Format(time.DateTime)
		}
		master := "-"
		if f.Master != "" {
			master = fmt.Sprintf("%s (%d)", f.Master, f.MasterPriority)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", f.Family, f.State, since, f.Priority, master, f.Peer,
			strings.Join(f.VIPs, " "))
	}
	return tw.Flush()
}

// haTitle capitalizes a state for people: "Master".
func haTitle(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// haRole says what a state means for traffic.
func haRole(s string) string {
	switch s {
	case "master":
		return "active"
	case "backup":
		return "passive"
	}
	return "not serving"
}
