// The KPI cards and the tables, built from the endpoint's JSON with DOM APIs only.

import { datum, el, lookup } from "./dom.js";
import { difference, formatterFor } from "./format.js";

/**
 * The KPIs, in the order the page shows them.
 *
 * key       the key in current_period
 * previous  where its previous value is: previous_period (the seed's keys) or
 *           previous_period_more (what the seed's previous period lacks)
 * kind      count | rate | money | duration: how it is formatted
 * decimals  how the endpoint rounds it, and so how its difference is rounded
 * change    how its change is derived. Each change is current − previous and is shown
 *           with data-key "change.<key>":
 *           - from: the endpoint's comparison key that already holds it, preferred
 *             (comparison.total_sms_change = current_period.total_sms −
 *             previous_period.total_sms, and so on, as the seed computes them);
 *           - otherwise it is computed here as current_period.<key> − <previous>.<key>,
 *             rounded like the figure itself (format.js, difference), null when either
 *             side is null.
 *           pct: the endpoint's relative change in %, shown with data-key
 *           "change_pct.<key>", only where the endpoint gives one (the page computes
 *           no percentage of its own).
 *           A change of a rate is a difference of percentages: percentage points (pp).
 * better    up | down | null: which direction is good news (colour and arrow only; the
 *           sign of the number says the same in text).
 */
export const KPIS = [
  {
    key: "total_sms",
    label: "Total SMS",
    kind: "count",
    decimals: 0,
    previous: "previous_period",
    change: { from: "comparison.total_sms_change", pct: "comparison.total_sms_change_pct" },
    better: null,
  },
  {
    key: "delivered_sms",
    label: "Delivered",
    kind: "count",
    decimals: 0,
    previous: "previous_period",
    change: { from: "comparison.delivered_sms_change" },
    better: "up",
  },
  { key: "failed_sms", label: "Failed", kind: "count", decimals: 0, previous: "previous_period", better: "down" },
  { key: "delivery_rate", label: "Delivery rate", kind: "rate", decimals: 2, previous: "previous_period", better: "up" },
  { key: "failure_rate", label: "Failure rate", kind: "rate", decimals: 2, previous: "previous_period", better: "down" },
  {
    key: "total_cost",
    label: "Total cost (billed)",
    kind: "money",
    decimals: 2,
    previous: "previous_period",
    change: { from: "comparison.cost_change", pct: "comparison.cost_change_pct" },
    better: null,
  },
  {
    key: "total_provider_cost",
    label: "Provider cost",
    kind: "money",
    decimals: 2,
    previous: "previous_period_more",
    better: null,
  },
  { key: "total_margin", label: "Total margin", kind: "money", decimals: 2, previous: "previous_period", better: null },
  {
    key: "margin_percentage",
    label: "Margin rate",
    kind: "rate",
    decimals: 2,
    previous: "previous_period_more",
    better: null,
  },
  {
    key: "avg_cost_per_sms",
    label: "Average cost per SMS",
    kind: "money",
    decimals: 2,
    previous: "previous_period",
    better: null,
  },
  {
    key: "avg_characters",
    label: "Average characters",
    kind: "count",
    decimals: 0,
    previous: "previous_period",
    better: null,
  },
  {
    key: "unique_recipients",
    label: "Unique recipients",
    kind: "count",
    decimals: 0,
    previous: "previous_period",
    better: null,
  },
  {
    key: "avg_delivery_time_seconds",
    label: "Average delivery time",
    kind: "duration",
    decimals: 2,
    previous: "previous_period_more",
    better: "down",
  },
];

/** The change of one KPI: {value, source} where source names what it came from. */
export function kpiChange(data, kpi) {
  if (kpi.change && kpi.change.from) {
    const fromEndpoint = lookup(data, kpi.change.from);
    if (fromEndpoint !== undefined) return { value: fromEndpoint, source: kpi.change.from };
  }
  const currentKey = `current_period.${kpi.key}`;
  const previousKey = `${kpi.previous}.${kpi.key}`;
  const value = difference(lookup(data, currentKey), lookup(data, previousKey), kpi.decimals);
  return { value, source: `${currentKey} - ${previousKey}` };
}

function trendOf(value, better) {
  if (typeof value !== "number" || value === 0) return { className: "trend-flat", arrow: "" };
  const up = value > 0;
  const arrow = up ? "▲" : "▼";
  if (!better) return { className: "trend-neutral", arrow };
  const good = (better === "up") === up;
  return { className: good ? "trend-good" : "trend-bad", arrow };
}

function kpiCard(data, kpi, fmt) {
  const format = formatterFor(fmt, kpi.kind);
  const currentKey = `current_period.${kpi.key}`;
  const previousKey = `${kpi.previous}.${kpi.key}`;
  const current = lookup(data, currentKey);
  const previous = lookup(data, previousKey);
  const change = kpiChange(data, kpi);
  const trend = trendOf(change.value, kpi.better);
  const titleId = `kpi-${kpi.key}`;

  const changeLine = el(
    "dd",
    { className: `kpi-change ${trend.className}` },
    trend.arrow ? el("span", { className: "arrow", "aria-hidden": "true" }, trend.arrow) : null,
    datum("span", `change.${kpi.key}`, change.value, format.change(change.value), {
      "data-derived-from": change.source,
    }),
  );
  if (kpi.change && kpi.change.pct) {
    const pct = lookup(data, kpi.change.pct);
    changeLine.append(
      " ",
      el(
        "span",
        { className: "pct" },
        "(",
        datum("span", `change_pct.${kpi.key}`, pct, fmt.signedPercent(pct), {
          "data-derived-from": kpi.change.pct,
        }),
        ")",
      ),
    );
  }

  return el(
    "article",
    { className: "kpi", "aria-labelledby": titleId, "data-kpi": kpi.key },
    el("h3", { id: titleId, className: "kpi-title" }, kpi.label),
    el(
      "dl",
      { className: "kpi-figures" },
      el("dt", { className: "visually-hidden" }, "This period"),
      el("dd", { className: "kpi-value" }, datum("span", currentKey, current, format.value(current))),
      el("dt", { className: "kpi-label" }, "Previous", el("span", { className: "visually-hidden" }, " period")),
      el("dd", { className: "kpi-previous" }, datum("span", previousKey, previous, format.value(previous))),
      el("dt", { className: "kpi-label" }, "Change"),
      changeLine,
    ),
  );
}

export function renderKpis(container, data, fmt) {
  container.replaceChildren(...KPIS.map((kpi) => kpiCard(data, kpi, fmt)));
}

function emptyRow(columns, text) {
  return el("tr", { className: "empty" }, el("td", { colspan: columns }, text));
}

const asArray = (value) => (Array.isArray(value) ? value : []);

/** current_period.by_message_type: message_type, count, delivered, delivery_rate, cost. */
export function renderByMessageType(tbody, data, fmt) {
  const rows = asArray(lookup(data, "current_period.by_message_type"));
  if (rows.length === 0) {
    tbody.replaceChildren(emptyRow(5, "No SMS in this period."));
    return;
  }
  tbody.replaceChildren(
    ...rows.map((row, i) => {
      const base = `current_period.by_message_type.${i}`;
      return el(
        "tr",
        {},
        datum("th", `${base}.message_type`, row.message_type, String(row.message_type ?? ""), { scope: "row" }),
        datum("td", `${base}.count`, row.count, fmt.count(row.count), { className: "num" }),
        datum("td", `${base}.delivered`, row.delivered, fmt.count(row.delivered), { className: "num" }),
        datum("td", `${base}.delivery_rate`, row.delivery_rate, fmt.rate(row.delivery_rate), { className: "num" }),
        datum("td", `${base}.cost`, row.cost, fmt.money(row.cost), { className: "num" }),
      );
    }),
  );
}

/** top_failure_reasons: failure_reason, count. */
export function renderFailureReasons(tbody, data, fmt) {
  const rows = asArray(data.top_failure_reasons);
  if (rows.length === 0) {
    tbody.replaceChildren(emptyRow(2, "No failed SMS in this period."));
    return;
  }
  tbody.replaceChildren(
    ...rows.map((row, i) =>
      el(
        "tr",
        {},
        datum("th", `top_failure_reasons.${i}.failure_reason`, row.failure_reason, String(row.failure_reason ?? ""), {
          scope: "row",
        }),
        datum("td", `top_failure_reasons.${i}.count`, row.count, fmt.count(row.count), { className: "num" }),
      ),
    ),
  );
}

/** The columns of the series table, in order (the chart plots the four counts). */
export const SERIES_COLUMNS = [
  { key: "total_sms", label: "All SMS", format: "count" },
  { key: "sent_sms", label: "Sent, awaiting report", format: "count" },
  { key: "delivered_sms", label: "Delivered", format: "count" },
  { key: "failed_sms", label: "Failed", format: "count" },
  { key: "delivery_rate", label: "Delivery rate", format: "rate" },
  { key: "cost", label: "Cost", format: "money" },
];

/** series: bucket_start and the columns above, one row a bucket. */
export function renderSeriesTable(table, data, fmt, weekly) {
  const rows = asArray(data.series);
  const caption = table.querySelector("caption");
  caption.textContent = weekly ? "SMS per week (weeks start on Monday, UTC)" : "SMS per day (UTC)";
  const headRow = table.querySelector("thead tr");
  headRow.replaceChildren(
    el("th", { scope: "col" }, weekly ? "Week" : "Day"),
    ...SERIES_COLUMNS.map((c) => el("th", { scope: "col", className: "num" }, c.label)),
  );
  const tbody = table.querySelector("tbody");
  if (rows.length === 0) {
    tbody.replaceChildren(emptyRow(SERIES_COLUMNS.length + 1, "No figures for this period."));
    return;
  }
  tbody.replaceChildren(
    ...rows.map((row, i) =>
      el(
        "tr",
        {},
        datum("th", `series.${i}.bucket_start`, row.bucket_start, fmt.bucket(row.bucket_start, weekly), {
          scope: "row",
        }),
        ...SERIES_COLUMNS.map((c) =>
          datum("td", `series.${i}.${c.key}`, row[c.key], fmt[c.format](row[c.key]), { className: "num" }),
        ),
      ),
    ),
  );
}
