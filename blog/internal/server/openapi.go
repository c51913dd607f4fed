package server

import _ "embed"

// openAPIDocument is the OpenAPI 3.1 description of this API, openapi.json beside this file. It is
// served as it is, and the tests of e2e/apivalidate hold the running service to it.
//
//go:embed openapi.json
var openAPIDocument []byte
