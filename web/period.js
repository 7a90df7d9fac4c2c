// The period picker's choices, turned into the metrics endpoint's `start`, `end` and
// `series` (openapi.yaml, /metrics: start and end are ISO 8601 with an offset, the
// period is [start, end), at most 366 days; series is `day` or `week`).

const DAY_MS = 24 * 60 * 60 * 1000;
export const MAX_DAYS = 366;
// Up to this many days the chart has a point a day; past it, a point a week.
export const DAILY_UP_TO_DAYS = 90;

/**
 * The choices of the period picker. `default` sends neither start nor end: the endpoint
 * then takes its own default, the last 30 days up to now. The other presets are rolling
 * windows ending now, as that default is (so "Last 30 days" is the default itself).
 */
export const PRESETS = [
  { id: "7d", label: "Last 7 days", days: 7 },
  { id: "default", label: "Last 30 days", days: 30 },
  { id: "90d", label: "Last 90 days", days: 90 },
  { id: "12m", label: "Last 12 months", months: 12 },
  { id: "custom", label: "Custom dates" },
];

const pad = (n, width = 2) => String(Math.abs(Math.trunc(n))).padStart(width, "0");

/**
 * A Date as ISO 8601 with the browser's offset for that instant, to the second:
 * 2026-11-01T00:00:00+01:00. (toISOString would give UTC, which is also valid, but the
 * local offset keeps "start of my day" readable in logs.)
 */
export function isoWithOffset(date) {
  const offsetMinutes = -date.getTimezoneOffset();
  const sign = offsetMinutes >= 0 ? "+" : "-";
  const abs = Math.abs(offsetMinutes);
  return (
    `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}` +
    `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`
  );
}

/** "2026-11-03" (an <input type=date> value) -> that day's local midnight, or null. */
export function parseDateInput(value) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value || "");
  if (!match) return null;
  const [year, month, day] = [Number(match[1]), Number(match[2]) - 1, Number(match[3])];
  const date = new Date(year, month, day);
  if (date.getFullYear() !== year || date.getMonth() !== month || date.getDate() !== day) {
    return null;
  }
  return date;
}

/** A Date -> "2026-11-03" in local time, for an <input type=date>. */
export function toDateInput(date) {
  return `${pad(date.getFullYear(), 4)}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function seriesFor(spanMs) {
  return spanMs > DAILY_UP_TO_DAYS * DAY_MS ? "week" : "day";
}

/**
 * The query of a choice: {start?, end?, series, description} or {error} for custom
 * dates that cannot be asked.
 *
 * Custom dates are whole days in the browser's time zone: `start` is the first date's
 * 00:00 (inclusive) and `end` the 00:00 after the last date (exclusive), each with its
 * own offset (they differ across a daylight-saving change).
 */
export function periodQuery(choice, customStart, customEnd, fmt, now = new Date()) {
  if (choice === "default") {
    return { series: "day", description: "the last 30 days" };
  }
  const preset = PRESETS.find((p) => p.id === choice);
  if (preset && preset.id !== "custom") {
    const start = new Date(now.getTime());
    if (preset.months) start.setMonth(start.getMonth() - preset.months);
    else start.setTime(now.getTime() - preset.days * DAY_MS);
    return {
      start: isoWithOffset(start),
      end: isoWithOffset(now),
      series: seriesFor(now.getTime() - start.getTime()),
      description: preset.label.toLowerCase().replace(/^last/, "the last"),
    };
  }
  const first = parseDateInput(customStart);
  const last = parseDateInput(customEnd);
  if (!first || !last) {
    return { error: "Choose both a start date and an end date." };
  }
  if (last < first) {
    return { error: "The end date must not be before the start date." };
  }
  const endExclusive = new Date(last.getFullYear(), last.getMonth(), last.getDate() + 1);
  const spanMs = endExclusive.getTime() - first.getTime();
  if (spanMs > MAX_DAYS * DAY_MS) {
    return { error: `A period may span at most ${MAX_DAYS} days.` };
  }
  return {
    start: isoWithOffset(first),
    end: isoWithOffset(endExclusive),
    series: seriesFor(spanMs),
    description: `${fmt.localDay(first)} to ${fmt.localDay(last)}`,
  };
}
