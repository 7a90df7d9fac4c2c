// The KPI page's configuration. Deployments (and `make dev`) write their own copy of this
// file; see web/README.md, "Configuration".
//
// metricsUrl            the metrics function's URL (its Lambda function URL, or
//                       http://127.0.0.1:8082/ under `make dev`). When empty, a page
//                       served from localhost takes `metrics_url=` from its URL fragment.
// signInUrl             where the "sign in again" link leads (the host dashboard's sign-in
//                       page), or null for no link.
// allowedParentOrigins  the origins (scheme://host[:port]) of the dashboards that may hand
//                       the page an access token with postMessage. Never "*".
window.KPI_CONFIG = {
  metricsUrl: "",
  signInUrl: null,
  allowedParentOrigins: [],
};
