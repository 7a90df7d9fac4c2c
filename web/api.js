// Calling the metrics function (openapi.yaml, `GET /metrics`).
//
// The access token travels only in the Authorization header, never in the query string.
// fetch's `credentials` stays at its default: the endpoint sends no
// Access-Control-Allow-Credentials (README, "metrics"), and needs none.

/** The query parameters the endpoint takes; it refuses any other (422). */
export const QUERY_PARAMETERS = [
  "start",
  "end",
  "client_id",
  "deployment_id",
  "agent_type",
  "series",
  "include",
];

/** At most this many retries after a 503, each after its Retry-After. */
export const MAX_RETRIES = 3;
const DEFAULT_RETRY_AFTER_SECONDS = 5;
const MAX_RETRY_AFTER_SECONDS = 60;

/**
 * A failed call. `kind` is what the page shows (the #status data-state):
 * expired (401), forbidden (403), unavailable (503), error (anything else).
 */
export class MetricsError extends Error {
  constructor(kind, message, details = {}) {
    super(message);
    this.name = "MetricsError";
    this.kind = kind;
    this.status = details.status ?? null;
    this.code = details.code ?? null;
    this.field = details.field ?? null;
    this.requestId = details.requestId ?? null;
    this.retryAfterSeconds = details.retryAfterSeconds ?? null;
  }
}

/** The metrics URL with the given parameters (empty ones left out). */
export function metricsRequestUrl(baseUrl, params) {
  const url = new URL(baseUrl, window.location.href);
  for (const name of QUERY_PARAMETERS) {
    const value = params[name];
    if (value !== undefined && value !== null && value !== "") {
      // URLSearchParams encodes "+" of an offset as %2B, which a bare "+" would not be.
      url.searchParams.set(name, String(value));
    }
  }
  return url.toString();
}

/** Retry-After as seconds (a number of seconds or an HTTP date), bounded. */
export function retryAfterSeconds(header, now = Date.now()) {
  let seconds = DEFAULT_RETRY_AFTER_SECONDS;
  if (header) {
    const trimmed = header.trim();
    if (/^\d+$/.test(trimmed)) {
      seconds = Number(trimmed);
    } else {
      const when = Date.parse(trimmed);
      if (!Number.isNaN(when)) seconds = Math.ceil((when - now) / 1000);
    }
  }
  return Math.min(MAX_RETRY_AFTER_SECONDS, Math.max(1, seconds));
}

async function errorBody(response) {
  try {
    const body = await response.json();
    if (body && typeof body === "object" && body.error && typeof body.error === "object") {
      return {
        code: typeof body.error.code === "string" ? body.error.code : null,
        message: typeof body.error.message === "string" ? body.error.message : null,
        field: typeof body.error.field === "string" ? body.error.field : null,
      };
    }
  } catch {
    // Not JSON (a proxy's HTML page, an empty body): the status says what it can.
  }
  return { code: null, message: null, field: null };
}

/** One GET. Resolves to {data, requestId}; rejects with a MetricsError (or an AbortError). */
export async function getMetrics(url, token, signal) {
  let response;
  try {
    response = await fetch(url, {
      method: "GET",
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new MetricsError(
      "error",
      "The metrics service could not be reached (the network, or this page's origin is not " +
        "allowed to call it).",
    );
  }
  const requestId = response.headers.get("X-Request-Id");
  if (response.ok) {
    let data;
    try {
      data = await response.json();
    } catch {
      throw new MetricsError("error", "The metrics service answered with something that is not JSON.", {
        status: response.status,
        requestId,
      });
    }
    if (!data || typeof data !== "object" || !data.current_period) {
      throw new MetricsError("error", "The metrics service's answer lacks the figures.", {
        status: response.status,
        requestId,
      });
    }
    return { data, requestId };
  }
  const body = await errorBody(response);
  const details = { status: response.status, requestId, code: body.code, field: body.field };
  switch (response.status) {
    case 401:
      throw new MetricsError("expired", "Your session has expired: sign in again", details);
    case 403:
      throw new MetricsError("forbidden", "You do not have access to these figures", details);
    case 503:
      throw new MetricsError(
        "unavailable",
        body.message || "The figures are temporarily unavailable.",
        { ...details, retryAfterSeconds: retryAfterSeconds(response.headers.get("Retry-After")) },
      );
    default:
      throw new MetricsError(
        "error",
        body.message || `The metrics service answered HTTP ${response.status}.`,
        details,
      );
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal && signal.aborted) {
      reject(new DOMException("Aborted", "AbortError"));
      return;
    }
    const timer = setTimeout(resolve, ms);
    if (signal) {
      signal.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          reject(new DOMException("Aborted", "AbortError"));
        },
        { once: true },
      );
    }
  });
}

/**
 * getMetrics, retried after a 503 once its Retry-After has passed, at most MAX_RETRIES
 * times. `onRetry(error, attempt)` is told before each wait. `getToken()` is asked before
 * every attempt, so a token the host refreshed meanwhile is the one sent.
 */
export async function getMetricsWithRetry(url, getToken, { signal, onRetry } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await getMetrics(url, getToken(), signal);
    } catch (err) {
      if (!(err instanceof MetricsError) || err.kind !== "unavailable" || attempt >= MAX_RETRIES) {
        throw err;
      }
      if (onRetry) onRetry(err, attempt + 1);
      await sleep(err.retryAfterSeconds * 1000, signal);
    }
  }
}
