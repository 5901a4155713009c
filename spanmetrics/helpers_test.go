package spanmetrics

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

func pcommonTime(t time.Time) pcommon.Timestamp { return pcommon.NewTimestampFromTime(t) }

// raceEnabled is set when the tests run with the race detector.
var raceEnabled bool
