// The dashboard page: initial state from the REST API, then the event stream.
// Events are queued as they arrive and applied once per animation frame (tiles,
// counts, the timeline): at 1,000 nodes and 100+ events/s the page does one
// batch of DOM work per frame, never one per event.
import { follow, get } from "./api.js";
import { Fleet } from "./fleet.js";
import { Apps, NodePrograms, Pushes } from "./panels.js";

const TOPICS = ["agent", "node", "app", "sweep", "service", "schedule", "push"];
const TIMELINE_ROWS = 500;

const fleet = new Fleet(document.querySelector("#fleet"));
const say = (text) => { document.querySelector("#status-line").textContent = text; };
const apps = new Apps(document.querySelector("#apps"), say);
const pushes = new Pushes(document.querySelector("#pushes"), say);
const programs = new NodePrograms(document.querySelector("#fleet"));
const timeline = document.querySelector("#timeline tbody");
const eventFilter = document.querySelector("#event-filter");
// arrivals: the last ARRIVALS events' [wall-clock seconds, seq, kind, node] as the stream
// delivered them (a late tile then says whether the stream or the page was late)
const ARRIVALS = 50;
const perf = { events: 0, frames: 0, lastSeq: null, arrivals: [] };
window.shoalDashboard = { fleet, perf };  // read by the browser tests and the benchmark

const queue = [];
let scheduled = false;

function frame() {
  const began = performance.now();
  scheduled = false;
  const batch = queue.splice(0, queue.length);
  const rows = [];
  for (const e of batch) {
    if (!e.old) {  // the tail read at start is history: the node list is newer
      if (e.topic === "node" || e.topic === "agent") fleet.event(e);
      apps.event(e);
      pushes.event(e);
    }
    rows.push(row(e));
    if (e.seq !== undefined) perf.lastSeq = e.seq;
  }
  fleet.flush();
  if (rows.length) {
    const fresh = rows.slice(-TIMELINE_ROWS).reverse();
    const fragment = document.createDocumentFragment();
    fragment.append(...fresh);
    timeline.prepend(fragment);
    while (timeline.rows.length > TIMELINE_ROWS) timeline.lastElementChild.remove();
  }
  perf.frames += 1;
  perf.work = (perf.work || 0) + performance.now() - began;  // script time in frames, ms
}

function schedule() {
  if (!scheduled) {
    scheduled = true;
    requestAnimationFrame(frame);
  }
}

function row(e) {
  const tr = document.createElement("tr");
  const when = e.time ? new Date(e.time * 1000).toLocaleTimeString() : "";
  for (const text of [e.seq ?? "", when, e.topic, e.kind, e.node ?? "", e.program ?? "", e.detail ?? ""]) {
    tr.insertCell().textContent = String(text);
  }
  const needle = eventFilter.value.trim().toLowerCase();
  if (needle && !tr.textContent.toLowerCase().includes(needle)) tr.hidden = true;
  return tr;
}

eventFilter.addEventListener("input", () => {
  const needle = eventFilter.value.trim().toLowerCase();
  for (const tr of timeline.rows) tr.hidden = Boolean(needle) && !tr.textContent.toLowerCase().includes(needle);
});

for (const button of document.querySelectorAll("nav button[data-tab]")) {
  button.addEventListener("click", () => {
    for (const b of document.querySelectorAll("nav button[data-tab]")) b.classList.toggle("on", b === button);
    for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== button.dataset.tab;
    if (button.dataset.tab === "apps") apps.load();
    if (button.dataset.tab === "pushes") pushes.load();
  });
}

fleet.onSelect = (name) => programs.show(name);
fleet.onDirty = schedule;
document.querySelector("#map").addEventListener("click", (ev) => {
  const dot = ev.target.closest("circle");
  if (dot) fleet.select(dot.dataset.node);
});

async function start() {
  const t0 = performance.now();
  const [status] = await Promise.all([get("/status"), fleet.load()]);
  document.querySelector("#service").textContent = `shoal ${status.version} · pid ${status.pid}`;
  perf.firstRender = performance.now() - t0;
  requestAnimationFrame(() => { perf.painted = performance.now(); document.body.dataset.ready = "1"; });
  const recent = await get("/events?limit=100").catch(() => "");
  for (const line of String(recent).split("\n")) {
    if (line.trim()) queue.push({ ...JSON.parse(line), old: true });
  }
  schedule();
  let seen = queue.findLast((e) => e.seq !== undefined)?.seq ?? null;
  // A reconnect replays from the URL's after: what was seen already is skipped.
  const onEvent = (e) => {
    if (e.seq !== undefined) {
      if (seen !== null && e.seq <= seen) return;
      seen = e.seq;
    }
    perf.events += 1;
    perf.arrivals.push([Date.now() / 1000, e.seq, e.kind, e.node]);
    if (perf.arrivals.length > ARRIVALS) perf.arrivals.shift();
    queue.push(e);
    schedule();
  };
  follow(TOPICS, seen, onEvent, (s) => {
    document.querySelector("#stream").textContent = s === "open" ? "live" : s;
    document.querySelector("#stream").className = `stream ${s}`;
  });
}

start().catch((error) => { say(`cannot read the service: ${error.message}`); });
