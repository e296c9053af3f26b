// A small time-series chart on a canvas: one line with its area, the latest value and the
// largest one, over a fixed window of time ending now. No library: a few dozen lines.

export interface Point {
  /** Milliseconds since the Unix epoch. */
  readonly t: number;
  readonly v: number;
}

function cssVar(name: string, fallback: string): string {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value === "" ? fallback : value;
}

function compact(value: number): string {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e4) return `${(value / 1e3).toFixed(0)}k`;
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`;
  return value >= 100 || Number.isInteger(value) ? value.toFixed(0) : value.toFixed(1);
}

function span(ms: number): string {
  const minutes = Math.round(ms / 60_000);
  return minutes <= 1 ? "minute" : `${minutes} minutes`;
}

/**
 * Draws `points` (oldest first) over the `windowMs` ending at `now` on `canvas`, and says what
 * it shows in the canvas' `aria-label` (`label`: what is measured).
 */
export function drawChart(canvas: HTMLCanvasElement, label: string, points: readonly Point[], now: number, windowMs: number): void {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth || canvas.width));
  const height = Math.max(1, Math.round(canvas.clientHeight || canvas.height));
  if (canvas.width !== width * ratio || canvas.height !== height * ratio) {
    canvas.width = width * ratio;
    canvas.height = height * ratio;
  }
  const g = canvas.getContext("2d");
  if (g === null) return;
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const start = now - windowMs;
  const shown = points.filter((p) => p.t >= start);
  const max = Math.max(1, ...shown.map((p) => p.v));
  const top = 14;
  const bottom = height - 2;
  const x = (t: number): number => ((t - start) / windowMs) * width;
  const y = (v: number): number => bottom - (v / max) * (bottom - top);

  g.strokeStyle = cssVar("--line", "#ccc");
  g.lineWidth = 1;
  g.beginPath();
  g.moveTo(0, bottom + 0.5);
  g.lineTo(width, bottom + 0.5);
  g.stroke();

  const first = shown[0];
  const last = shown.at(-1);
  if (first !== undefined && last !== undefined) {
    g.beginPath();
    g.moveTo(x(first.t), y(first.v));
    for (const p of shown) g.lineTo(x(p.t), y(p.v));
    g.strokeStyle = cssVar("--chart", "#0b57a4");
    g.lineWidth = 1.5;
    g.stroke();
    g.lineTo(x(last.t), bottom);
    g.lineTo(x(first.t), bottom);
    g.closePath();
    g.fillStyle = cssVar("--chart-fill", "rgba(11,87,164,.12)");
    g.fill();
    if (shown.length === 1) {
      g.beginPath();
      g.arc(x(last.t), y(last.v), 2.5, 0, 2 * Math.PI);
      g.fillStyle = cssVar("--chart", "#0b57a4");
      g.fill();
    }
  }
  g.fillStyle = cssVar("--muted", "#555");
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "top";
  g.fillText(`max ${compact(max)}`, 2, 0);
  const now_ = last === undefined ? "no data yet" : `now ${compact(last.v)}`;
  g.fillText(now_, width - g.measureText(now_).width - 2, 0);

  canvas.dataset.points = String(shown.length);
  canvas.dataset.max = String(shown.length === 0 ? 0 : Math.max(...shown.map((p) => p.v)));
  canvas.dataset.last = String(last?.v ?? 0);
  canvas.setAttribute(
    "aria-label",
    last === undefined
      ? `${label}: no data yet`
      : `${label} over the last ${span(windowMs)}: now ${compact(last.v)}, at most ${compact(max)}`,
  );
}
