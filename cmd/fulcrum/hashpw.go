package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

// maxPasswordBytes is bcrypt's limit: it uses the first 72 bytes of a
// password and ignores the rest, so a longer one would be weaker than it
// looks. bcrypt.GenerateFromPassword refuses it too.
const maxPasswordBytes = 72

// maxLineBytes bounds the line read for a password, so that a password file
// that is not one (a log, /dev/zero) fails fast.
const maxLineBytes = 4096

func cmdHashPassword(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlags("hash-password", "hash-password [-cost N] [< FILE]", stderr)
	cost := fs.Int("cost", bcrypt.DefaultCost, fmt.Sprintf("bcrypt cost, %d..%d; each step doubles the work", bcrypt.MinCost, bcrypt.MaxCost))
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: fulcrum hash-password [-cost N] [< FILE]

Prints the bcrypt hash of a password, for password_hash in [[admin.user]].
On a terminal it asks twice, without echo; otherwise it reads the first line
of standard input. The output is the hash and a newline only.

`)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *cost < bcrypt.MinCost || *cost > bcrypt.MaxCost {
		// GenerateFromPassword would silently use DefaultCost below MinCost.
		fmt.Fprintf(stderr, "fulcrum hash-password: -cost %d: must be between %d and %d\n", *cost, bcrypt.MinCost, bcrypt.MaxCost)
		fs.Usage()
		return 2
	}
	pw, err := newPassword(stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum hash-password: %v\n", err)
		return 1
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pw), *cost)
	if err != nil {
		fmt.Fprintf(stderr, "fulcrum hash-password: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", hash)
	return 0
}

// newPassword reads the password to hash: typed twice on a terminal, else
// the first line of stdin.
func newPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := terminal(stdin); ok {
		pw, err := readPasswordTerminal(f, "Password: ", stderr)
		if err != nil {
			return "", err
		}
		if err := checkNewPassword(pw); err != nil {
			return "", err
		}
		again, err := readPasswordTerminal(f, "Again: ", stderr)
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", errors.New("the passwords do not match")
		}
		return pw, nil
	}
	pw, err := readFirstLine(stdin)
	if err != nil {
		return "", fmt.Errorf("standard input: %w", err)
	}
	if err := checkNewPassword(pw); err != nil {
		return "", fmt.Errorf("standard input: %w", err)
	}
	return pw, nil
}

func checkNewPassword(pw string) error {
	switch {
	case pw == "":
		return errors.New("empty password")
	case len(pw) > maxPasswordBytes:
		return fmt.Errorf("password is %d bytes; bcrypt uses only the first %d, so longer passwords are refused", len(pw), maxPasswordBytes)
	}
	return nil
}

// readFirstLine reads r's first line without its line ending ("\n" or
// "\r\n"). A line longer than maxLineBytes is an error.
func readFirstLine(r io.Reader) (string, error) {
	br := bufio.NewReader(io.LimitReader(r, maxLineBytes+2))
	line, err := br.ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	if line == "" {
		return "", errors.New("empty: want the password on the first line")
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if len(line) > maxLineBytes {
		return "", fmt.Errorf("first line longer than %d bytes", maxLineBytes)
	}
	return line, nil
}

// terminal returns stdin as a file when it is a terminal, which is when
// asking for a password without echo makes sense.
func terminal(stdin io.Reader) (*os.File, bool) {
	f, ok := stdin.(*os.File)
	if !ok {
		return nil, false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return f, err == nil
}

// readPasswordTerminal prompts on stderr and reads one line from the
// terminal f with echo off. The terminal's settings are restored on every
// path, including an interrupt (Ctrl-C), which ends the read with an error
// rather than leaving the shell without echo.
func readPasswordTerminal(f *os.File, prompt string, stderr io.Writer) (string, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", fmt.Errorf("terminal: %w", err)
	}
	noEcho := *old
	noEcho.Lflag &^= unix.ECHO
	noEcho.Lflag |= unix.ICANON | unix.ISIG
	noEcho.Iflag |= unix.ICRNL
	// Catch the signals first, so that none arrives between turning echo
	// off and being able to turn it back on.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sig)
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &noEcho); err != nil {
		return "", fmt.Errorf("terminal: cannot turn echo off: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(stderr, prompt)
	defer fmt.Fprintln(stderr) // the Enter key was not echoed

	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		line, err := readTerminalLine(f)
		done <- result{line, err}
	}()
	select {
	case r := <-done:
		return r.line, r.err
	case s := <-sig:
		// The reading goroutine stays blocked; the command is about to
		// exit anyway.
		return "", fmt.Errorf("interrupted (%v)", s)
	}
}

// readTerminalLine reads up to a newline from a terminal in canonical mode,
// where each read returns at most one line, so nothing after it is consumed.
func readTerminalLine(f *os.File) (string, error) {
	var line []byte
	buf := make([]byte, 256)
	for {
		n, err := f.Read(buf)
		line = append(line, buf[:n]...)
		if i := strings.IndexByte(string(line), '\n'); i >= 0 {
			return strings.TrimSuffix(string(line[:i]), "\r"), nil
		}
		if len(line) > maxLineBytes {
			return "", fmt.Errorf("line longer than %d bytes", maxLineBytes)
		}
		if err == io.EOF || (err == nil && n == 0) {
			if len(line) == 0 {
				return "", errors.New("no password typed (end of input)")
			}
			return string(line), nil
		}
		if err != nil {
			return "", err
		}
	}
}
