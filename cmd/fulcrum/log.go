package main

import (
	"fmt"
	"io"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/fulcrumlb/fulcrum/config"
)

// newLogger builds the process logger from the [global] settings. Its level
// can be changed later (a reload) through the returned AtomicLevel.
func newLogger(g config.Global, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	l, err := zapcore.ParseLevel(g.LogLevel)
	if err != nil {
		return nil, zap.AtomicLevel{}, fmt.Errorf("global.log_level: %w", err)
	}
	level := zap.NewAtomicLevelAt(l)
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	switch g.LogFormat {
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	default:
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core, zap.ErrorOutput(zapcore.AddSync(w))), level, nil
}
