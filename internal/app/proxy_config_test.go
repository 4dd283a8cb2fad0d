package app

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/proxy/route"
)

// TestProxyConfigFromYAML: the case study's feature flags as proxy_settings rules in the config
// file, turned into the proxy's configuration.
func TestProxyConfigFromYAML(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pgshift.yaml")
	yaml := `source: host=src dbname=app
target: host=dst dbname=app
proxy: 127.0.0.1:6432
proxy_settings:
  mode: split
  auth_file: /etc/pgshift/userlist.txt
  lag_limit: 10s
  read_your_writes: false
  allow_functions: [public.report_total]
  rules:
    - name: use_rds_for_reports
      application_names: ["report*"]
      percent: 100
    - name: use_rds_for_inventory_reads
      tables: [inventory, "warehouse.*"]
      client_addresses: [10.0.0.0/8, 192.0.2.7]
      percent: 30
      key: param
      key_param: tenant
`
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	pc, err := ProxyConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if pc.Mode != proxy.ModeSplit || pc.Listen != "127.0.0.1:6432" || pc.LagLimit != 10*time.Second || pc.ReadYourWrites ||
		pc.AuthFile != "/etc/pgshift/userlist.txt" || len(pc.AllowFunctions) != 1 {
		t.Errorf("proxy config: %+v", pc)
	}
	if len(pc.Rules) != 2 || pc.Rules[1].Key != route.KeyParam || pc.Rules[1].KeyParam != "tenant" || pc.Rules[1].Percent != 30 ||
		len(pc.Rules[1].Addresses) != 2 || pc.Rules[1].Addresses[1].String() != "192.0.2.7/32" {
		t.Errorf("rules: %+v", pc.Rules)
	}
	if _, err := route.NewRules(pc.Rules); err != nil {
		t.Errorf("rules do not validate: %v", err)
	}
	// Read-your-writes is on unless the file turns it off.
	cfg.ProxySettings.ReadYourWrites = nil
	if pc, _ := ProxyConfig(cfg); !pc.ReadYourWrites {
		t.Errorf("read_your_writes must default to on")
	}
	cfg.ProxySettings.Mode = "splitt"
	if err := cfg.Validate(); err == nil {
		t.Errorf("a bad mode validated")
	}
	cfg.ProxySettings.Mode = ""
	cfg.ProxySettings.Rules[0].Addresses = []string{"not-an-address"}
	if _, err := ProxyConfig(cfg); err == nil {
		t.Errorf("a bad client address was accepted")
	}
}
