// The dashboard at `/dashboard`: polls `GET /api/stats` every second and draws the figures of
// now and of the last minutes. With an API key on the server, it asks for the key, keeps it
// for this tab (sessionStorage) and sends it as `Authorization: Bearer KEY`.
import type { StatsReply, StatsSample } from "@wirehub/protocol";

import { drawChart, type Point } from "./chart.js";

const POLL_MS = 1000;
/** The charts span the samples kept (five minutes), at least one minute. */
const WINDOW_MS = 5 * 60_000;
const MIN_WINDOW_MS = 60_000;
const KEY = "wirehub.api-key";

function element<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the dashboard lacks #${id}`);
  return found as T;
}

const readyEl = element("ready");
const updatedEl = element("updated");
const authForm = element<HTMLFormElement>("auth");
const keyInput = element<HTMLInputElement>("key");
const authProblem = element("auth-problem");

let samples: StatsSample[] = [];
let timer: ReturnType<typeof setTimeout> | undefined;

const number = new Intl.NumberFormat("en");

function text(id: string, value: string): void {
  element(id).textContent = value;
}

function rate(a: StatsSample | undefined, b: StatsSample | undefined, field: keyof StatsSample): number {
  if (a === undefined || b === undefined || b.time_ms <= a.time_ms) return 0;
  return Math.max(0, ((b[field] - a[field]) * 1000) / (b.time_ms - a.time_ms));
}

function rates(field: keyof StatsSample): Point[] {
  const points: Point[] = [];
  for (let i = 1; i < samples.length; i++) {
    const b = samples[i];
    if (b !== undefined) points.push({ t: b.time_ms, v: rate(samples[i - 1], b, field) });
  }
  return points;
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172_800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} days`;
}

function render(reply: StatsReply): void {
  const { now } = reply;
  readyEl.dataset.ready = String(reply.ready);
  readyEl.textContent = reply.ready ? "ready" : "not ready (see /readyz)";
  updatedEl.textContent = `updated ${new Date(now.time_ms).toLocaleTimeString()}`;
  const previous = samples.at(-2);
  const latest = samples.at(-1);
  text("connections", number.format(now.connections));
  text("channels", number.format(now.channels));
  text("subscriptions", number.format(now.subscriptions));
  text("in-rate", number.format(Math.round(rate(previous, latest, "messages_in_total"))));
  text("published-rate", number.format(Math.round(rate(previous, latest, "published_total"))));
  text("out-rate", number.format(Math.round(rate(previous, latest, "delivered_total"))));
  text("slow", number.format(now.slow_consumers_total));
  text("heartbeat", number.format(now.heartbeat_terminations_total));
  text("broker", `${reply.broker.kind}: ${reply.broker.reachable ? "reachable" : "unreachable"}`);
  text("uptime", duration(reply.uptime_ms));

  const at = now.time_ms;
  const windowMs = Math.min(WINDOW_MS, Math.max(MIN_WINDOW_MS, at - (samples[0]?.time_ms ?? at)));
  const chart = (id: string, label: string, points: Point[]): void =>
    drawChart(element<HTMLCanvasElement>(id), label, points, at, windowMs);
  chart("chart-connections", "Connections", samples.map((s) => ({ t: s.time_ms, v: s.connections })));
  chart("chart-in", "Messages in per second", rates("messages_in_total"));
  chart("chart-published", "Published per second", rates("published_total"));
  chart("chart-out", "Deliveries out per second", rates("delivered_total"));

  const body = element("closes");
  const rows = reply.closes.filter((close) => close.count > 0);
  body.replaceChildren(
    ...(rows.length === 0
      ? [row(["none yet", "", ""], true)]
      : rows.map((close) => row([String(close.code), close.reason, number.format(close.count)], false))),
  );
}

function row(cells: string[], empty: boolean): HTMLTableRowElement {
  const tr = document.createElement("tr");
  if (empty) {
    const td = document.createElement("td");
    td.colSpan = 3;
    td.className = "hint";
    td.textContent = cells[0] ?? "";
    tr.append(td);
    return tr;
  }
  cells.forEach((cell, i) => {
    const td = document.createElement("td");
    td.textContent = cell;
    if (i === 2) td.className = "num";
    tr.append(td);
  });
  return tr;
}

async function poll(): Promise<void> {
  timer = undefined;
  const key = sessionStorage.getItem(KEY);
  const since = samples.at(-1)?.time_ms;
  const url = since === undefined ? "/api/stats" : `/api/stats?since=${since}`;
  let response: Response;
  try {
    response = await fetch(url, {
      headers: key === null ? {} : { authorization: `Bearer ${key}` },
      cache: "no-store",
    });
  } catch {
    readyEl.dataset.ready = "false";
    readyEl.textContent = "the server does not answer";
    schedule();
    return;
  }
  if (response.status === 401) {
    authForm.hidden = false;
    authProblem.textContent = key === null ? "" : "that key was refused";
    readyEl.dataset.ready = "";
    readyEl.textContent = "the server needs its API key";
    keyInput.focus();
    return; // until a key is given
  }
  if (!response.ok) {
    readyEl.dataset.ready = "false";
    readyEl.textContent = `GET /api/stats: HTTP ${response.status}`;
    schedule();
    return;
  }
  authForm.hidden = true;
  const reply = (await response.json()) as StatsReply;
  const cutoff = reply.now.time_ms - WINDOW_MS;
  samples = samples.concat(reply.samples).filter((s) => s.time_ms >= cutoff);
  render(reply);
  schedule();
}

function schedule(): void {
  if (timer === undefined) timer = setTimeout(() => void poll(), POLL_MS);
}

authForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, keyInput.value);
  keyInput.value = "";
  void poll();
});

void poll();
