package main

import (
	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/config"
)

// copyFlags are the copy settings that copy and run (which copies first when needed) share;
// each also has a config-file key.
type copyFlags struct {
	replicaIdentityFull, noOwner, noPrivileges, noRoles, recopyUnlogged bool
	ddl                                                                 string
}

func addCopyFlags(cmd *cobra.Command, f *copyFlags) {
	fs := cmd.Flags()
	fs.BoolVar(&f.replicaIdentityFull, "replica-identity-full", false,
		"set REPLICA IDENTITY FULL on the source for tables with no key and no usable identity (recorded; finish restores it) instead of refusing them (config: replica_identity_full)")
	fs.BoolVar(&f.noOwner, "no-owner", false, "leave every object on the target to the target user, as pg_restore --no-owner (config: no_owner)")
	fs.BoolVar(&f.noPrivileges, "no-privileges", false, "do not copy GRANT/REVOKE and default privileges, as pg_restore --no-privileges (config: no_privileges)")
	fs.BoolVar(&f.noRoles, "no-roles", false, "create no role on the target: the roles the objects name must exist there (config: no_roles)")
	fs.StringVar(&f.ddl, "ddl", config.Defaults().DDL, "follow: capture schema changes on the source (copy installs an event trigger; needs a superuser) and replay them on the target in order with the rows; stop: stop with the DDL to run on the target (config: ddl)")
	fs.BoolVar(&f.recopyUnlogged, "recopy-unlogged", false, "copy unlogged tables again during the cutover pause, since their changes cannot be followed (config: recopy_unlogged)")
}

// apply sets the flags given on the command line over the configuration, and checks the result.
func (f *copyFlags) apply(cmd *cobra.Command, cfg *config.Config) error {
	fs := cmd.Flags()
	for name, set := range map[string]func(){
		"replica-identity-full": func() { cfg.ReplicaIdentityFull = f.replicaIdentityFull },
		"no-owner":              func() { cfg.NoOwner = f.noOwner },
		"no-privileges":         func() { cfg.NoPrivileges = f.noPrivileges },
		"no-roles":              func() { cfg.NoRoles = f.noRoles },
		"recopy-unlogged":       func() { cfg.RecopyUnlogged = f.recopyUnlogged },
		"ddl":                   func() { cfg.DDL = f.ddl },
	} {
		if changed(fs, name) {
			set()
		}
	}
	return cfg.Validate()
}
