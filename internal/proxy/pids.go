package proxy

// CatalogPID is the backend PID of the proxy's own catalog session on server r (0 when it has
// none open): a cutover that ends the other sessions of a server leaves this one alone, which
// the next switch reloads the catalogs on.
func (p *Proxy) CatalogPID(r Role) uint32 {
	p.catMu.Lock()
	defer p.catMu.Unlock()
	if c := p.catConns[r]; c != nil && !c.IsClosed() {
		return c.PgConn().PID()
	}
	return 0
}
