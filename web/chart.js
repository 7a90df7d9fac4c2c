// The series as a uPlot line chart (vendor/uPlot.iife.min.js, from npm `uplot`), sized to
// its container: uPlot draws on a canvas of an explicit width, so a ResizeObserver
// gives it the container's width whenever the layout changes (a phone turned, a window
// resized, a host's frame resized).
//
// The chart is a picture of the series table (render.js, renderSeriesTable), which is
// the accessible form of the same numbers; the chart itself is hidden from assistive
// technology.

const COLORS = {
  total: "#1f4e99",
  delivered: "#1b7a3a",
  failed: "#b3261e",
  sent: "#8a5300",
};

// Axis steps: whole SMS only.
const COUNT_STEPS = [];
for (let power = 1; power <= 1e9; power *= 10) COUNT_STEPS.push(power, 2 * power, 5 * power);

const heightFor = (width) => (width < 520 ? 240 : 320);

export function createChart(container, fallbackDetails) {
  let plot = null;
  let lastWidth = 0;

  const observer =
    typeof ResizeObserver === "function"
      ? new ResizeObserver((entries) => {
          const width = Math.floor(entries[entries.length - 1].contentRect.width);
          if (!plot || width <= 0 || width === lastWidth) return;
          lastWidth = width;
          plot.setSize({ width, height: heightFor(width) });
        })
      : null;
  if (observer) observer.observe(container);

  function showMessage(text) {
    if (plot) {
      plot.destroy();
      plot = null;
    }
    const message = document.createElement("p");
    message.className = "chart-message";
    message.textContent = text;
    container.replaceChildren(message);
  }

  /** Draws `series` (the endpoint's array); `weekly` for week buckets. */
  function update(series, weekly, fmt) {
    if (typeof window.uPlot !== "function") {
      showMessage("The chart could not be loaded. The same figures are in the table below.");
      if (fallbackDetails) fallbackDetails.open = true;
      return;
    }
    if (!Array.isArray(series) || series.length === 0) {
      showMessage("No figures for this period.");
      return;
    }
    const uPlot = window.uPlot;
    const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
    const x = series.map((row) => Math.floor(Date.parse(row.bucket_start) / 1000));
    const data = [
      x,
      series.map((row) => num(row.total_sms)),
      series.map((row) => num(row.delivered_sms)),
      series.map((row) => num(row.failed_sms)),
      series.map((row) => num(row.sent_sms)),
    ];
    const countValue = (u, v) => (v === null || v === undefined ? "—" : fmt.count(v));
    const width = Math.max(1, Math.floor(container.clientWidth));
    lastWidth = width;

    const opts = {
      width,
      height: heightFor(width),
      // Buckets are UTC days and weeks: the time axis is in UTC too, so a bucket is
      // labelled with its own date whatever the browser's time zone.
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { points: { size: 8 }, drag: { x: false, y: false } },
      scales: {
        x: { time: true },
        y: { range: (u, min, max) => [0, max > 0 ? Math.ceil(max * 1.1) : 1] },
      },
      axes: [
        {
          stroke: "#333",
          grid: { stroke: "#e3e6ea", width: 1 },
          ticks: { stroke: "#c9ced6", width: 1 },
          values: (u, splits) => splits.map((s) => fmt.axisDay(new Date(s * 1000))),
        },
        {
          stroke: "#333",
          grid: { stroke: "#e3e6ea", width: 1 },
          ticks: { stroke: "#c9ced6", width: 1 },
          incrs: COUNT_STEPS,
          values: (u, splits) => splits.map((v) => fmt.count(v)),
          size: 56,
        },
      ],
      series: [
        {
          label: weekly ? "Week" : "Day",
          value: (u, v) =>
            v === null || v === undefined ? "—" : fmt.bucket(new Date(v * 1000).toISOString(), weekly),
        },
        { label: "All SMS", stroke: COLORS.total, width: 2, value: countValue },
        { label: "Delivered", stroke: COLORS.delivered, width: 2, dash: [8, 4], value: countValue },
        { label: "Failed", stroke: COLORS.failed, width: 2, dash: [2, 3], value: countValue },
        { label: "Sent, awaiting report", stroke: COLORS.sent, width: 2, dash: [10, 3, 2, 3], value: countValue },
      ],
    };

    if (plot) plot.destroy();
    container.replaceChildren();
    plot = new uPlot(opts, data, container);
  }

  function destroy() {
    if (observer) observer.disconnect();
    if (plot) plot.destroy();
    plot = null;
  }

  return { update, destroy };
}
