package gateway

// ExpfmtOpenMetrics exposes expfmtOpenMetrics to the external tests.
var ExpfmtOpenMetrics = expfmtOpenMetrics
