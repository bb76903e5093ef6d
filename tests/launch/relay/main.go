// Command relay joins its standard input and output to a TCP address: QEMU
// runs it for each connection the guest makes to a guestfwd address
// (launch.Options.GuestForward), so that the guest reaches a server on the
// host's loopback through user networking with restrict=on.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: relay HOST:PORT")
		os.Exit(2)
	}
	conn, err := net.Dial("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(conn, os.Stdin); conn.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(os.Stdout, conn); os.Stdout.Close(); done <- struct{}{} }()
	<-done
	<-done
}
