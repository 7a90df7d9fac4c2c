// The user's Supabase access token, handed over by the host dashboard, kept in memory.
//
// Two ways in (web/README.md, "The token handover"):
// - the URL fragment: page.html#access_token=<jwt>. It is read once, at start, and the
//   fragment is then removed from the address bar (history.replaceState), so it stays
//   neither in the history nor in a bookmark. A fragment is never sent to a server.
// - window.postMessage({type: "voipia-sms-kpi-token", access_token: "<jwt>"}, "<page origin>")
//   from the embedding (or opening) page, accepted only from an origin listed in the
//   configuration's allowedParentOrigins. The host may post again whenever Supabase
//   refreshes the session; the newest token is used from the next request on.
//
// The token is never written to the query string, localStorage, sessionStorage or a
// cookie, and is not exposed on window: it lives in this module's closure.

export const TOKEN_MESSAGE = "voipia-sms-kpi-token";
export const READY_MESSAGE = "voipia-sms-kpi-ready";
export const EXPIRED_MESSAGE = "voipia-sms-kpi-token-expired";

// A JWT is three base64url parts; leave room for other bearer formats, but nothing that
// could not go in an HTTP header (fetch would throw) and nothing huge.
const TOKEN_SHAPE = /^[A-Za-z0-9._~+/=-]{16,8192}$/;
const LOCAL_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

let accessToken = null;

export function currentToken() {
  return accessToken;
}

export function hasToken() {
  return accessToken !== null;
}

function acceptToken(value) {
  if (typeof value !== "string" || !TOKEN_SHAPE.test(value)) return false;
  accessToken = value;
  return true;
}

/** True for an http(s) URL. */
export function isHttpUrl(value) {
  try {
    const url = new URL(value);
    return url.protocol === "https:" || url.protocol === "http:";
  } catch {
    return false;
  }
}

/**
 * Reads access_token (and, for local use, metrics_url) from the fragment, then removes
 * the fragment from the address bar. Returns {metricsUrl} (null when not given or not
 * allowed). A fragment without either key (such as #main, the skip link's) is left alone.
 */
export function takeTokenFromFragment() {
  const hash = window.location.hash;
  if (!hash || hash.length < 2) return { metricsUrl: null };
  const params = new URLSearchParams(hash.slice(1));
  if (!params.has("access_token") && !params.has("metrics_url")) return { metricsUrl: null };

  acceptToken(params.get("access_token"));

  // metrics_url in the fragment is for local development only: honoured only on a page
  // served from this machine, and only when config.js names no metricsUrl (app.js).
  let metricsUrl = null;
  const candidate = params.get("metrics_url");
  // The token goes wherever this URL points: on this machine only, to this machine.
  if (candidate && LOCAL_HOSTS.has(window.location.hostname) && isHttpUrl(candidate)
      && LOCAL_HOSTS.has(new URL(candidate).hostname)) {
    metricsUrl = candidate;
  }

  // Supabase's own redirect puts refresh_token, expires_in and more in the fragment: all
  // of it goes.
  const { pathname, search } = window.location;
  window.history.replaceState(window.history.state, "", pathname + search);
  return { metricsUrl };
}

function hostWindows() {
  const windows = [];
  if (window.parent && window.parent !== window) windows.push(window.parent);
  if (window.opener && !window.opener.closed) windows.push(window.opener);
  return windows;
}

/** Is the page inside a frame (so a host may post a token)? */
export function isEmbedded() {
  return window.parent !== window || Boolean(window.opener);
}

/**
 * Listens for tokens posted by the host. `onToken()` is called after a new token was
 * taken. Messages from other origins, from windows other than the parent or opener, or
 * of another shape are ignored.
 */
export function listenForTokens(allowedOrigins, onToken) {
  const allowed = new Set(allowedOrigins);
  window.addEventListener("message", (event) => {
    if (!allowed.has(event.origin)) return;
    if (!hostWindows().includes(event.source)) return;
    const data = event.data;
    if (!data || typeof data !== "object" || data.type !== TOKEN_MESSAGE) return;
    if (acceptToken(data.access_token)) onToken();
  });
}

/**
 * Tells the host something (that the page is ready for a token, that the token it gave
 * has expired). Only the type is sent, never a token, and only to the allowed origins:
 * postMessage delivers to the window whose origin matches the target origin.
 */
export function tellHost(type, allowedOrigins) {
  for (const target of hostWindows()) {
    for (const origin of allowedOrigins) {
      try {
        target.postMessage({ type }, origin);
      } catch {
        // A malformed origin in the configuration: nothing to tell there.
      }
    }
  }
}
