// Package archtest holds no code: its test checks that the imports between pgshift's packages
// keep the rule docs/architecture.md states under "Import rule".
package archtest
