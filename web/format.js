// Formatting of the metrics' numbers for people: the user's locale (navigator.language),
// money in the endpoint's currency, percentages as the endpoint gives them (numbers from
// 0 to 100 with 2 decimals, openapi.yaml's `Rate`), durations in s / min / h.
//
// Every formatter takes the raw JSON value and returns text; null (a rate of a zero
// base, a missing average) becomes NONE. Nothing here touches the DOM.

export const NONE = "—";

const DEFAULT_CURRENCY = "EUR";

function pickLocale(requested) {
  try {
    // Throws a RangeError for a malformed tag; an unknown but well-formed one falls back.
    return new Intl.NumberFormat(requested).resolvedOptions().locale;
  } catch {
    return "en";
  }
}

function pickCurrency(code) {
  if (typeof code === "string" && /^[A-Z]{3}$/.test(code)) {
    try {
      new Intl.NumberFormat("en", { style: "currency", currency: code });
      return code;
    } catch {
      // Not a currency Intl knows: fall through.
    }
  }
  return DEFAULT_CURRENCY;
}

const isNumber = (value) => typeof value === "number" && Number.isFinite(value);

/**
 * The formatters for one answer of the endpoint.
 * @param {string} requestedLocale navigator.language
 * @param {string|undefined} currencyCode the answer's `currency` (EUR when absent)
 */
export function makeFormatters(requestedLocale, currencyCode) {
  const locale = pickLocale(requestedLocale);
  const currency = pickCurrency(currencyCode);

  const integer = new Intl.NumberFormat(locale, { maximumFractionDigits: 0 });
  const signedInteger = new Intl.NumberFormat(locale, {
    maximumFractionDigits: 0,
    signDisplay: "exceptZero",
  });
  const money = new Intl.NumberFormat(locale, { style: "currency", currency });
  const signedMoney = new Intl.NumberFormat(locale, {
    style: "currency",
    currency,
    signDisplay: "exceptZero",
  });
  // The JSON's rates are already percentages (97.77 means 97.77 %): the `percent` unit
  // prints them as they are, where `style: "percent"` would multiply by 100.
  const percent = new Intl.NumberFormat(locale, {
    style: "unit",
    unit: "percent",
    minimumFractionDigits: 0,
    maximumFractionDigits: 2,
  });
  const signedPercent = new Intl.NumberFormat(locale, {
    style: "unit",
    unit: "percent",
    maximumFractionDigits: 2,
    signDisplay: "exceptZero",
  });
  const points = new Intl.NumberFormat(locale, {
    maximumFractionDigits: 2,
    signDisplay: "exceptZero",
  });
  // SI symbols (s, min, h) after a number in the user's locale: Intl's own short units
  // vary by locale ("sec" in English), the symbols do not.
  const secondsNumber = new Intl.NumberFormat(locale, { maximumFractionDigits: 2 });
  const wholeNumber = new Intl.NumberFormat(locale, { maximumFractionDigits: 0 });
  const seconds = { format: (v) => `${secondsNumber.format(v)}\u00a0s` };
  const wholeSeconds = { format: (v) => `${wholeNumber.format(v)}\u00a0s` };
  const minutes = { format: (v) => `${wholeNumber.format(v)}\u00a0min` };
  const hours = { format: (v) => `${wholeNumber.format(v)}\u00a0h` };
  const day = new Intl.DateTimeFormat(locale, {
    timeZone: "UTC",
    year: "numeric",
    month: "short",
    day: "numeric",
  });
  const shortDay = new Intl.DateTimeFormat(locale, {
    timeZone: "UTC",
    month: "short",
    day: "numeric",
  });
  const localDay = new Intl.DateTimeFormat(locale, {
    year: "numeric",
    month: "short",
    day: "numeric",
  });

  const guard = (fn) => (value) => (isNumber(value) ? fn(value) : NONE);

  // 3.42 -> "3.42 s"; 125 -> "2 min 5 s"; 3725 -> "1 h 2 min".
  function duration(value) {
    const abs = Math.abs(value);
    if (abs < 60) return seconds.format(abs);
    const totalSeconds = Math.round(abs);
    const h = Math.floor(totalSeconds / 3600);
    const m = Math.floor((totalSeconds % 3600) / 60);
    const s = totalSeconds % 60;
    if (h > 0) return m > 0 ? `${hours.format(h)} ${minutes.format(m)}` : hours.format(h);
    return s > 0 ? `${minutes.format(m)} ${wholeSeconds.format(s)}` : minutes.format(m);
  }

  function sign(value) {
    if (value > 0) return "+";
    if (value < 0) return "−";
    return "";
  }

  return {
    locale,
    currency,
    count: guard((v) => integer.format(v)),
    money: guard((v) => money.format(v)),
    rate: guard((v) => percent.format(v)),
    duration: guard((v) => (v < 0 ? "−" : "") + duration(v)),
    signedCount: guard((v) => signedInteger.format(v)),
    signedMoney: guard((v) => signedMoney.format(v)),
    signedPercent: guard((v) => signedPercent.format(v)),
    // A difference of two rates is in percentage points, not a percentage.
    signedPoints: guard((v) => `${points.format(v)}\u00a0pp`),
    signedDuration: guard((v) => `${sign(v)}${duration(v)}`),
    // Buckets are UTC days or weeks (openapi: series), so they are shown in UTC.
    bucket(iso, weekly) {
      const date = new Date(iso);
      if (Number.isNaN(date.getTime())) return String(iso);
      return weekly ? `Week of ${day.format(date)}` : day.format(date);
    },
    axisDay(date) {
      return shortDay.format(date);
    },
    localDay(date) {
      return localDay.format(date);
    },
  };
}

/** The formatter of one kind of KPI value, and of its change. */
export function formatterFor(fmt, kind) {
  switch (kind) {
    case "money":
      return { value: fmt.money, change: fmt.signedMoney };
    case "rate":
      return { value: fmt.rate, change: fmt.signedPoints };
    case "duration":
      return { value: fmt.duration, change: fmt.signedDuration };
    case "count":
    default:
      return { value: fmt.count, change: fmt.signedCount };
  }
}

/**
 * current − previous, rounded as the endpoint rounds that kind of figure (README,
 * "metrics": counts and average characters whole, rates and money 2 decimals), so
 * binary floating point leaves no 0.30000000000000004. null when either side is not a
 * number (a rate of a zero base, a period without delivered SMS).
 */
export function difference(current, previous, decimals) {
  if (!isNumber(current) || !isNumber(previous)) return null;
  const factor = 10 ** decimals;
  const raw = current - previous;
  // Half away from zero, like the endpoint.
  const rounded = (Math.sign(raw) * Math.round(Math.abs(raw) * factor + Number.EPSILON)) / factor;
  return Object.is(rounded, -0) ? 0 : rounded;
}
