package db

import (
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"
)

// Every connection pgshift opens (plain, pooled, replication) notices a dead peer — a host
// that crashed, a NAT or firewall that dropped the flow, a half-open connection — within
// about two minutes instead of the operating system's default of hours (idle) or about 15
// minutes (unacknowledged data):
//
//   - TCP keepalives: the first probe after keepaliveIdle without traffic, then one every
//     keepaliveInterval; keepaliveCount unanswered probes end the connection;
//   - TCP_USER_TIMEOUT (Linux): data sent but not acknowledged for userTimeout ends it, which
//     keepalives cannot do while data is in flight.
//
// A peer that is alive but slow (a long query, a COPY the server is not reading) keeps
// acknowledging, so neither ends a healthy connection; the copy's stall watchdog covers a
// connection that is alive but moves no data. The libpq parameters keepalives,
// keepalives_idle, keepalives_interval, keepalives_count (seconds) and tcp_user_timeout
// (milliseconds) in a DSN override these values (pgx would otherwise send them to the server
// as settings it does not know).
const (
	keepaliveIdle     = 30 * time.Second
	keepaliveInterval = 10 * time.Second
	keepaliveCount    = 6
	userTimeout       = 2 * time.Minute
)

// keepalive is the TCP liveness configuration of one connection.
type keepalive struct {
	enabled        bool
	idle, interval time.Duration
	count          int
	userTimeout    time.Duration // 0: the operating system's default
}

// takeKeepalive removes the libpq keepalive parameters from params and returns the
// configuration they and the defaults give.
func takeKeepalive(params map[string]string) (keepalive, error) {
	ka := keepalive{enabled: true, idle: keepaliveIdle, interval: keepaliveInterval, count: keepaliveCount, userTimeout: userTimeout}
	for _, p := range []struct {
		name string
		set  func(n int)
	}{
		{"keepalives", func(n int) { ka.enabled = n != 0 }},
		{"keepalives_idle", func(n int) { ka.idle = time.Duration(n) * time.Second }},
		{"keepalives_interval", func(n int) { ka.interval = time.Duration(n) * time.Second }},
		{"keepalives_count", func(n int) { ka.count = n }},
		{"tcp_user_timeout", func(n int) { ka.userTimeout = time.Duration(n) * time.Millisecond }},
	} {
		v, ok := params[p.name]
		if !ok {
			continue
		}
		delete(params, p.name)
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return ka, fmt.Errorf("invalid connection string: %s must be a whole number of at least 0, not %q", p.name, v)
		}
		if n == 0 && p.name != "keepalives" && p.name != "tcp_user_timeout" {
			continue // libpq: 0 means the system default; keep pgshift's
		}
		p.set(n)
	}
	return ka, nil
}

// dialer returns a dialer that applies ka to every TCP connection it opens.
func (ka keepalive) dialer(timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if ka.enabled {
		d.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: ka.idle, Interval: ka.interval, Count: ka.count}
	} else {
		d.KeepAlive = -1
	}
	if ms := ka.userTimeout.Milliseconds(); ms > 0 {
		d.Control = func(network, _ string, c syscall.RawConn) error {
			if network != "tcp" && network != "tcp4" && network != "tcp6" {
				return nil // Unix-domain sockets have no TCP options
			}
			var serr error
			if err := c.Control(func(fd uintptr) { serr = setUserTimeout(fd, int(ms)) }); err != nil {
				return err
			}
			return serr
		}
	}
	return d
}
