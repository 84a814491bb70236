package tlsterm

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// maxPEMFile bounds a certificate, key or CA file. A chain, or a bundle of
// every public root CA, is a few hundred KiB; more is a wrong file.
const maxPEMFile = 4 << 20

// readFile reads a PEM file. Errors start with the file's name. It refuses
// anything but a regular file, so that a FIFO or /dev/zero named by mistake
// cannot hang a reload.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fileError(name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileError(name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fileError(name, err)
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("%s: larger than %d MiB", name, maxPEMFile>>20)
	}
	return data, nil
}

// fileError names the file once: "site.pem: no such file or directory"
// rather than "site.pem: open site.pem: no such file or directory". The
// cause stays wrapped, so errors.Is(err, fs.ErrNotExist) holds.
func fileError(name string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("%s: %w", name, err)
}

// LoadCAs reads a PEM file of CA certificates into a pool.
func LoadCAs(name string) (*x509.CertPool, error) {
	data, err := readFile(name)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate found", name)
	}
	return pool, nil
}
