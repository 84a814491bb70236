package config

import (
	"regexp"

	"golang.org/x/crypto/bcrypt"
)

// validUserName is the form of an admin user name, which appears in logs
// and events.
var validUserName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// admin checks the [admin] table, if the file has one; listens holds the
// virtual services' listen and redirect_http addresses, which the admin
// address must not overlap.
func (v *validator) admin(p path, a *Admin, listens []listenAddr) {
	if !v.inFile(p) {
		return // off
	}
	lp := p.with("listen")
	if a.Listen == "" {
		v.add(lp, `required when [admin] is present: the admin address, such as "127.0.0.1:9080"`)
	} else if addr, port, msg := parseHostPort(a.Listen, true); msg != "" {
		v.add(lp, "invalid address %q: %s", a.Listen, msg)
	} else {
		la := listenAddr{text: a.Listen, addr: addr, port: port, line: v.line(lp)}
		if msg := la.conflict(listens); msg != "" {
			v.add(lp, "%s", msg)
		}
	}

	cp, kp := p.with("tls_cert"), p.with("tls_key")
	switch {
	case a.TLSCert != "" && a.TLSKey == "":
		v.add(cp, "given without tls_key: give both or neither")
	case a.TLSCert == "" && a.TLSKey != "":
		v.add(kp, "given without tls_cert: give both or neither")
	case a.TLSCert != "":
		if _, err := loadKeyPair(a.TLSCert, a.TLSKey); err != nil {
			v.add(cp, "cannot load the certificate and key: %v", err)
		}
	}

	up := p.with("user")
	if a.Listen != "" && len(a.Users) == 0 {
		v.add(up, "required: at least one [[admin.user]] to log in with")
	}
	names := map[string]*AdminUser{}
	for i, u := range a.Users {
		q := v.pathOf(u, up.elem(i, u.label))
		switch {
		case u.Name == "":
			v.add(q.with("name"), "required")
		case !validUserName.MatchString(u.Name):
			v.add(q.with("name"), "%q may hold only letters, digits, '.', '_' and '-'", u.Name)
		case names[u.Name] != nil:
			v.add(q.with("name"), "%q is already used by the user at line %d", u.Name, names[u.Name].Line)
		default:
			names[u.Name] = u
		}
		// The hash itself is not echoed: it is as good as a password to
		// an offline attack.
		switch _, err := bcrypt.Cost([]byte(u.PasswordHash)); {
		case u.PasswordHash == "":
			v.add(q.with("password_hash"), "required: a bcrypt hash; make one with `fulcrum hash-password`")
		case err != nil:
			v.add(q.with("password_hash"), "not a bcrypt hash; make one with `fulcrum hash-password`")
		}
	}
}
