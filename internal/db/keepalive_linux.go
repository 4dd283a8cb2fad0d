package db

import "syscall"

// tcpUserTimeout is TCP_USER_TIMEOUT from <linux/tcp.h>; the syscall package does not name it.
const tcpUserTimeout = 0x12

func setUserTimeout(fd uintptr, ms int) error {
	return syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, ms)
}
