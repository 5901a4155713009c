package gateway

// TextBounds exposes textBounds to the external tests.
var TextBounds = textBounds
