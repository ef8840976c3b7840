package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// apiBase turns what the user typed (http://127.0.0.1:8080, .../v1, .../v1/,
// or 127.0.0.1:8080) into the API base URL ending in /v1.
func apiBase(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("-url is required (e.g. -url http://127.0.0.1:8080)")
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing -url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("-url %q: scheme must be http or https", raw)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("-url %q has no host", raw)
	}
	u.RawQuery, u.Fragment = "", ""
	p := strings.TrimRight(u.Path, "/")
	p = strings.TrimSuffix(p, "/v1")
	u.Path = p + "/v1"
	u.RawPath = ""
	return u, nil
}

// checkLoopback refuses a URL whose host is not, or does not resolve only
// to, loopback addresses: a load generator must not hammer somebody else's
// server by a typo. -allow-remote skips this check.
func checkLoopback(ctx context.Context, u *url.URL, r *net.Resolver) error {
	host := u.Hostname()
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		addrs, err := r.LookupIPAddr(ctx, host)
		if err != nil {
			return fmt.Errorf("resolving host %q of -url: %w", host, err)
		}
		for _, a := range addrs {
			ips = append(ips, a.IP)
		}
	}
	if len(ips) == 0 {
		return fmt.Errorf("host %q of -url resolves to no address", host)
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			what := fmt.Sprintf("host %s is not a loopback address", host)
			if ip.String() != host {
				what = fmt.Sprintf("host %q resolves to %s, not a loopback address", host, ip)
			}
			return fmt.Errorf("refusing to load-test %s: %s; pass -allow-remote to load-test a remote server",
				u.Redacted(), what)
		}
	}
	return nil
}
