// vcsim for cloudlet's tests: govmomi's vSphere API simulator (the VPX model:
// a vCenter with datacenter DC0, cluster DC0_C0, datastore LocalDS_0, the
// distributed switch DC0_DVS with port group DC0_DVPG0, and VMs such as
// DC0_H0_VM0 to clone from) on a loopback port.
//
// It prints one line, "VCSIM_URL=<url>", once it serves, and stops cleanly on
// SIGTERM or SIGINT (removing the model's temporary datastore directories).
// Built offline from Debian's golang-github-vmware-govmomi-dev by build.sh.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

// envOr keeps the password off the command line, where ps would show it.
func envOr(key, fallback string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return fallback
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (port 0 picks a free one)")
	user := flag.String("username", "user", "login user name")
	pass := flag.String("password", envOr("VCSIM_PASSWORD", "pass"), "login password (default: $VCSIM_PASSWORD, else pass)")
	useTLS := flag.Bool("tls", false, "serve https with a self-signed certificate")
	certFile := flag.String("tlscert", "", "serve https with this PEM certificate (and -tlskey)")
	keyFile := flag.String("tlskey", "", "the PEM private key of -tlscert")
	flag.Parse()

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: creating the model: %v", err)
	}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if *useTLS {
		// httptest's built-in certificate: a 1024-bit RSA key, which OpenSSL's
		// default security level refuses to verify; -tlscert gives a real one.
		model.Service.TLS = new(tls.Config)
	}
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("vcsim: loading -tlscert/-tlskey: %v", err)
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	server := model.Service.NewServer()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	served := *server.URL
	served.User = nil // the credentials are the caller's; never print them
	fmt.Printf("VCSIM_URL=%s\n", served.String())
	os.Stdout.Sync()

	<-stop
	server.Close()
	model.Remove()
}
