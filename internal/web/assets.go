package web

import "embed"

// assets is the dashboard: index.html, app.js, style.css, and the vendored charting library
// under vendor/ (see assets/vendor/README.md for what it is and how to update it). Nothing is
// loaded from elsewhere: the agent may run on a machine without internet access.
//
//go:embed assets
var assets embed.FS
