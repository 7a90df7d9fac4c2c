// The KPI page: reads the configuration and the token, asks the metrics function, shows
// the answer. See web/README.md.

import { MAX_RETRIES, MetricsError, getMetricsWithRetry, metricsRequestUrl } from "./api.js";
import { createChart } from "./chart.js";
import { el } from "./dom.js";
import { makeFormatters } from "./format.js";
import { PRESETS, periodQuery, toDateInput } from "./period.js";
import { renderByMessageType, renderFailureReasons, renderKpis, renderSeriesTable } from "./render.js";
import {
  EXPIRED_MESSAGE,
  READY_MESSAGE,
  currentToken,
  hasToken,
  isEmbedded,
  isHttpUrl,
  listenForTokens,
  takeTokenFromFragment,
  tellHost,
} from "./token.js";

// How long an embedded page waits for its host to post a token before saying so.
const HOST_TOKEN_WAIT_MS = 10000;
// Selects apply themselves after this pause (arrow keys on a closed select change it
// once a step: one request, not five).
const AUTO_APPLY_DELAY_MS = 300;

const $ = (id) => document.getElementById(id);

const ui = {
  form: $("filters"),
  period: $("period"),
  startDate: $("start-date"),
  endDate: $("end-date"),
  customFields: Array.from(document.querySelectorAll(".custom-date")),
  client: $("client"),
  deployment: $("deployment"),
  agentType: $("agent-type"),
  formError: $("form-error"),
  summary: $("summary"),
  status: $("status"),
  statusText: $("status-text"),
  statusExtra: $("status-extra"),
  results: $("results"),
  kpis: $("kpis"),
  chart: $("chart"),
  chartCaption: $("chart-caption"),
  seriesDetails: $("series-details"),
  seriesTable: $("series-table"),
  typesBody: document.querySelector("#types-table tbody"),
  failuresBody: document.querySelector("#failures-table tbody"),
};

function readConfig() {
  const raw = window.KPI_CONFIG && typeof window.KPI_CONFIG === "object" ? window.KPI_CONFIG : {};
  const origins = Array.isArray(raw.allowedParentOrigins) ? raw.allowedParentOrigins : [];
  return {
    metricsUrl: typeof raw.metricsUrl === "string" ? raw.metricsUrl.trim() : "",
    signInUrl: typeof raw.signInUrl === "string" && isHttpUrl(raw.signInUrl) ? raw.signInUrl : null,
    // Exact origins only (scheme://host[:port]): "*" or "null" (any sandboxed frame)
    // would let any page that frames this one hand it a token.
    allowedParentOrigins: origins.filter(
      (o) => typeof o === "string" && /^https?:\/\/[A-Za-z0-9.-]+(:[0-9]{1,5})?$/.test(o),
    ),
  };
}

const config = readConfig();
const fragment = takeTokenFromFragment();
const metricsUrl = config.metricsUrl || fragment.metricsUrl || "";

const state = {
  // {clients, deployments, agent_types} from the endpoint (include=filters), once.
  filters: null,
  // The endpoint refused include=filters (422 naming it): do not ask again.
  filtersRefused: false,
  controller: null,
  hostWaitTimer: null,
  autoApplyTimer: null,
};

const chart = createChart(ui.chart, ui.seriesDetails);
let fmt = makeFormatters(navigator.language, "EUR");

// --- status --------------------------------------------------------------------------

/**
 * The one message element, #status, and its data-state:
 * loading | ready | expired | forbidden | unavailable | error.
 */
function setStatus(stateName, text, { requestId = null, signIn = false, retry = false } = {}) {
  ui.status.dataset.state = stateName;
  ui.statusText.textContent = text;
  const extra = [];
  if (signIn && config.signInUrl) {
    extra.push(" ", el("a", { href: config.signInUrl, target: "_top", id: "sign-in" }, "Sign in"));
  }
  if (requestId) {
    extra.push(
      " ",
      el(
        "span",
        { className: "request-id" },
        "Request id for support: ",
        el("code", { id: "request-id", "data-request-id": requestId }, requestId),
      ),
    );
  }
  if (retry) {
    const button = el("button", { type: "button", id: "retry", className: "secondary" }, "Try again");
    button.addEventListener("click", () => load());
    extra.push(" ", button);
  }
  ui.statusExtra.replaceChildren(...extra);
}

function setBusy(busy) {
  ui.results.setAttribute("aria-busy", busy ? "true" : "false");
  ui.results.classList.toggle("is-loading", busy);
  ui.status.classList.toggle("is-busy", busy);
}

function hideResults() {
  ui.results.hidden = true;
}

// --- filters ---------------------------------------------------------------------------

function fillPeriodOptions() {
  ui.period.replaceChildren(
    ...PRESETS.map((p) =>
      el("option", { value: p.id }, p.id === "default" ? `${p.label} (default)` : p.label),
    ),
  );
  ui.period.value = "default";
}

function showCustomDates(show) {
  for (const node of ui.customFields) node.hidden = !show;
  if (show && !ui.startDate.value && !ui.endDate.value) {
    const today = new Date();
    const monthAgo = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 29);
    ui.startDate.value = toDateInput(monthAgo);
    ui.endDate.value = toDateInput(today);
  }
}

const isString = (v) => typeof v === "string" && v !== "";

/** The endpoint's `filters`, kept only in the shape openapi gives it. */
function cleanFilters(raw) {
  if (!raw || typeof raw !== "object") return null;
  const list = (v) => (Array.isArray(v) ? v : []);
  return {
    clients: list(raw.clients)
      .filter((c) => c && isString(c.id))
      .map((c) => ({ id: c.id, name: isString(c.name) ? c.name : c.id })),
    deployments: list(raw.deployments)
      .filter((d) => d && isString(d.id))
      .map((d) => ({
        id: d.id,
        name: isString(d.name) ? d.name : d.id,
        client_id: isString(d.client_id) ? d.client_id : null,
        agent_type: isString(d.agent_type) ? d.agent_type : null,
      })),
    agent_types: list(raw.agent_types).filter(isString),
  };
}

const byName = (a, b) => a.name.localeCompare(b.name, undefined, { sensitivity: "base" });
const agentTypeLabel = (t) => t.charAt(0).toUpperCase() + t.slice(1);

function fillSelect(select, allLabel, options, keep) {
  select.replaceChildren(
    el("option", { value: "" }, allLabel),
    ...options.map((o) => el("option", { value: o.value }, o.label)),
  );
  select.value = options.some((o) => o.value === keep) ? keep : "";
}

/** The deployments offered: those of the chosen client and agent type. */
function fillDeployments() {
  const filters = state.filters;
  if (!filters) return;
  const client = ui.client.value;
  const agentType = ui.agentType.value;
  const deployments = filters.deployments
    .filter((d) => !client || d.client_id === client)
    .filter((d) => !agentType || d.agent_type === agentType)
    .sort(byName);
  fillSelect(
    ui.deployment,
    "All deployments",
    deployments.map((d) => ({ value: d.id, label: d.name })),
    ui.deployment.value,
  );
}

function fillFilters() {
  const filters = state.filters;
  if (!filters) return;
  fillSelect(
    ui.client,
    "All clients",
    [...filters.clients].sort(byName).map((c) => ({ value: c.id, label: c.name })),
    ui.client.value,
  );
  fillSelect(
    ui.agentType,
    "All agent types",
    filters.agent_types.map((t) => ({ value: t, label: agentTypeLabel(t) })),
    ui.agentType.value,
  );
  fillDeployments();
  ui.client.disabled = false;
  ui.deployment.disabled = false;
  ui.agentType.disabled = false;
}

function selectedText(select) {
  const option = select.selectedOptions && select.selectedOptions[0];
  return option ? option.textContent : "";
}

// --- loading ---------------------------------------------------------------------------

function showFormError(text) {
  ui.formError.textContent = text;
  ui.formError.hidden = !text;
  const invalid = Boolean(text) && ui.period.value === "custom";
  for (const input of [ui.startDate, ui.endDate]) {
    if (invalid) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
}

function showSignedOut(text) {
  hideResults();
  setBusy(false);
  setStatus("expired", text, { signIn: true });
}

/** Asks the endpoint for the chosen period and filters, and shows the answer. */
async function load() {
  clearTimeout(state.autoApplyTimer);
  if (!metricsUrl) {
    hideResults();
    setBusy(false);
    setStatus(
      "error",
      "This page is not configured: config.js names no metricsUrl (see the page's README).",
    );
    return;
  }
  if (!hasToken()) {
    showSignedOut("You are not signed in: sign in again");
    return;
  }
  const period = periodQuery(ui.period.value, ui.startDate.value, ui.endDate.value, fmt);
  if (period.error) {
    showFormError(period.error);
    return;
  }
  showFormError("");

  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;

  const params = {
    start: period.start,
    end: period.end,
    series: period.series,
    client_id: ui.client.value,
    deployment_id: ui.deployment.value,
    agent_type: ui.agentType.value,
    include: state.filters || state.filtersRefused ? undefined : "filters",
  };
  const weekly = period.series === "week";
  const scope = [
    `Figures for ${period.description}`,
    ui.client.value ? selectedText(ui.client) : "all clients",
    ui.deployment.value ? selectedText(ui.deployment) : "all deployments",
    ui.agentType.value ? selectedText(ui.agentType) : "all agent types",
  ].join(" · ");

  setBusy(true);
  setStatus("loading", "Loading the figures…");

  try {
    let answer;
    try {
      answer = await fetchWithRetry(params, controller.signal);
    } catch (err) {
      // An endpoint that does not know include=filters yet: ask once more without it.
      if (err instanceof MetricsError && err.status === 422 && err.field === "include" && params.include) {
        state.filtersRefused = true;
        params.include = undefined;
        answer = await fetchWithRetry(params, controller.signal);
      } else {
        throw err;
      }
    }
    if (controller !== state.controller) return;
    show(answer.data, weekly, scope, period.description);
  } catch (err) {
    if (controller !== state.controller || (err && err.name === "AbortError")) return;
    showError(err);
  } finally {
    if (controller === state.controller) {
      state.controller = null;
      setBusy(false);
    }
  }
}

function fetchWithRetry(params, signal) {
  return getMetricsWithRetry(metricsRequestUrl(metricsUrl, params), currentToken, {
    signal,
    onRetry: (err, attempt) => {
      setStatus(
        "unavailable",
        `The figures are temporarily unavailable: retrying in ${err.retryAfterSeconds} s ` +
          `(retry ${attempt} of ${MAX_RETRIES}).`,
        { requestId: err.requestId },
      );
    },
  });
}

function show(data, weekly, scope, periodDescription) {
  fmt = makeFormatters(navigator.language, data.currency);
  if (!state.filters && data.filters) {
    state.filters = cleanFilters(data.filters);
    fillFilters();
  }
  ui.summary.textContent = scope;
  renderKpis(ui.kpis, data, fmt);
  renderByMessageType(ui.typesBody, data, fmt);
  renderFailureReasons(ui.failuresBody, data, fmt);
  renderSeriesTable(ui.seriesTable, data, fmt, weekly);
  ui.chartCaption.textContent = weekly
    ? "All SMS, delivered, failed and sent but awaiting a delivery report, per week (UTC, from Monday)."
    : "All SMS, delivered, failed and sent but awaiting a delivery report, per UTC day.";
  // Visible before the chart is drawn: uPlot needs the container's width.
  ui.results.hidden = false;
  chart.update(data.series, weekly, fmt);
  setStatus("ready", `Figures updated for ${periodDescription}.`);
}

function showError(err) {
  if (!(err instanceof MetricsError)) {
    hideResults();
    setStatus("error", err && err.message ? err.message : "Something went wrong.");
    return;
  }
  hideResults();
  switch (err.kind) {
    case "expired":
      setStatus("expired", "Your session has expired: sign in again", {
        requestId: err.requestId,
        signIn: true,
      });
      // An embedding host may answer with a fresh token (listenForTokens reloads).
      tellHost(EXPIRED_MESSAGE, config.allowedParentOrigins);
      break;
    case "forbidden":
      setStatus("forbidden", "You do not have access to these figures", { requestId: err.requestId });
      break;
    case "unavailable":
      setStatus(
        "unavailable",
        `The figures are still unavailable after ${MAX_RETRIES} retries. Please try again in a few minutes.`,
        { requestId: err.requestId, retry: true },
      );
      break;
    default:
      setStatus("error", err.message, { requestId: err.requestId, retry: true });
  }
}

// --- start -----------------------------------------------------------------------------

function onTokenFromHost() {
  clearTimeout(state.hostWaitTimer);
  const stateName = ui.status.dataset.state;
  // A fresh token after an expiry, or the first one: load. Otherwise it is simply used
  // from the next request on.
  if (stateName === "expired" || (stateName === "loading" && !state.controller)) load();
}

function scheduleLoad() {
  clearTimeout(state.autoApplyTimer);
  state.autoApplyTimer = setTimeout(load, AUTO_APPLY_DELAY_MS);
}

function start() {
  fillPeriodOptions();
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  ui.period.addEventListener("change", () => {
    const custom = ui.period.value === "custom";
    showCustomDates(custom);
    showFormError("");
    if (!custom) scheduleLoad();
  });
  ui.client.addEventListener("change", () => {
    fillDeployments();
    scheduleLoad();
  });
  ui.agentType.addEventListener("change", () => {
    fillDeployments();
    scheduleLoad();
  });
  ui.deployment.addEventListener("change", scheduleLoad);

  listenForTokens(config.allowedParentOrigins, onTokenFromHost);

  if (hasToken()) {
    load();
  } else if (isEmbedded() && config.allowedParentOrigins.length > 0) {
    setStatus("loading", "Waiting for the dashboard to hand over your session…");
    tellHost(READY_MESSAGE, config.allowedParentOrigins);
    state.hostWaitTimer = setTimeout(() => {
      if (!hasToken()) showSignedOut("You are not signed in: sign in again");
    }, HOST_TOKEN_WAIT_MS);
  } else {
    load();
  }
}

start();
