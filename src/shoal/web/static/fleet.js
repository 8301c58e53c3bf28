// The fleet view: one tile per node coloured by its state, counts per state, the
// selection filter (evaluated by the API), a node's detail, and a map when nodes
// carry lat/lon. Changes are marked dirty and drawn once per animation frame:
// never one DOM update per event.
import { ApiError, get, post } from "./api.js";

export const STATES = ["up", "suspect", "down", "failed", "noagent", "attaching", "unmanaged"];
const LABELS = { noagent: "no agent", unmanaged: "not managed" };

// The tile's state from the API's node record (link state first, then the failed set).
export function nodeState(n) {
  switch (n.link) {
    case "down": return "down";
    case "suspect": return "suspect";
    case "no-agent": return "noagent";
    case "refused": return "failed";
    default: break;
  }
  if (n.failed) return "failed";
  if (n.link === "up") return "up";
  if (n.link === "attaching") return "attaching";
  return "unmanaged";
}

// What a node event does to the node's record (null: nothing to change).
export function applyNodeEvent(n, e) {
  switch (e.kind) {
    case "node_up": n.link = "up"; n.link_reason = ""; n.failed = null; return true;
    case "node_suspect": n.link = "suspect"; n.link_reason = e.detail; return true;
    case "node_down": n.link = "down"; n.link_reason = e.detail; n.failed = e.detail; return true;
    case "node_refused": n.link = "refused"; n.link_reason = e.detail; n.failed = e.detail; return true;
    default: break;
  }
  // Agent news says nothing of a node the detector holds suspect or down
  // (a killed node's stream ends after its node_down).
  if (n.link === "down" || n.link === "suspect") return false;
  switch (e.kind) {
    case "agent_revived": case "agent_installed": n.link = "up"; n.link_reason = ""; return true;
    case "agent_missing": case "agent_lost": n.link = "no-agent"; n.link_reason = e.detail; return true;
    default: return false;
  }
}

export class Fleet {
  constructor(root) {
    this.nodes = new Map();    // name -> record (the API's, updated by events)
    this.tiles = new Map();    // name -> element
    this.dots = new Map();     // name -> map dot (drawn when the map is first shown)
    this.dirty = new Set();
    this.shown = null;         // names the filter selects (null: all)
    this.grid = root.querySelector("#tiles");
    this.counts = root.querySelector("#counts");
    this.detail = root.querySelector("#node-detail");
    this.map = root.querySelector("#map");
    this.filterError = root.querySelector("#filter-error");
    this.selected = null;
    this.onSelect = () => {};
    this.onDirty = () => {};   // the page draws the next frame (set by main.js)
    this.grid.addEventListener("click", (ev) => {
      const tile = ev.target.closest(".tile");
      if (tile) this.select(tile.dataset.node);
    });
    this.grid.addEventListener("mouseover", (ev) => {
      const tile = ev.target.closest(".tile");
      if (tile && !tile.title) tile.title = this.hover(tile.dataset.node);
    });
    root.querySelector("#filter-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.filter(root.querySelector("#filter").value.trim());
    });
    root.querySelector("#view-map").addEventListener("change", (ev) => {
      this.map.hidden = !ev.target.checked;
      this.grid.hidden = ev.target.checked;
      if (ev.target.checked && !this.dots.size) this.drawMap();
    });
  }

  async load() {
    const records = await get("/nodes");
    const fragment = document.createDocumentFragment();
    this.nodes.clear();
    this.tiles.clear();
    for (const n of records) {
      this.nodes.set(n.name, n);
      const tile = document.createElement("div");
      tile.className = `tile s-${nodeState(n)}`;
      tile.dataset.node = n.name;
      tile.textContent = n.name;
      this.tiles.set(n.name, tile);
      fragment.append(tile);
    }
    this.grid.replaceChildren(fragment);
    const located = records.some((n) => n.attrs && n.attrs.lat !== undefined && n.attrs.lon !== undefined);
    document.querySelector("#map-toggle").hidden = !located;
    this.drawCounts();
  }

  // An event of topic "node" (or an agent event about a node): true when it changed a tile.
  event(e) {
    const n = e.node && this.nodes.get(e.node);
    if (!n || !applyNodeEvent(n, e)) return false;
    this.dirty.add(e.node);
    return true;
  }

  // Called once per animation frame by the page.
  flush() {
    if (!this.dirty.size) return;
    for (const name of this.dirty) {
      const tile = this.tiles.get(name);
      const n = this.nodes.get(name);
      if (!tile || !n) continue;
      const cls = `tile s-${nodeState(n)}${this.hidden(name) ? " dim" : ""}${name === this.selected ? " sel" : ""}`;
      if (tile.className !== cls) tile.className = cls;
      tile.title = "";
      const dot = this.dots.get(name);
      if (dot) {
        dot.setAttribute("class", `dot s-${nodeState(n)}`);
        dot.firstChild.textContent = this.hover(name);
      }
      if (name === this.selected) this.drawDetail();
    }
    this.dirty.clear();
    this.drawCounts();
  }

  hidden(name) {
    return this.shown !== null && !this.shown.has(name);
  }

  tally() {
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const n of this.nodes.values()) counts[nodeState(n)] += 1;
    return counts;
  }

  drawCounts() {
    const counts = this.tally();
    const parts = STATES.filter((s) => counts[s] || s === "up" || s === "down").map((s) => {
      const span = document.createElement("span");
      span.className = `count s-${s}`;
      span.dataset.state = s;
      span.textContent = `${LABELS[s] || s} ${counts[s]}`;
      return span;
    });
    const total = document.createElement("span");
    total.className = "count total";
    total.textContent = `${this.nodes.size} nodes`;
    this.counts.replaceChildren(total, ...parts);
  }

  hover(name) {
    const n = this.nodes.get(name);
    if (!n) return name;
    const reason = n.failed || n.link_reason;
    return `${name} (${n.host}): ${LABELS[nodeState(n)] || nodeState(n)}${reason ? ` — ${reason}` : ""}`;
  }

  async filter(expr) {
    this.filterError.hidden = true;
    if (!expr) {
      this.shown = null;
    } else {
      try {
        const answer = await post("/select", { expr });
        this.shown = new Set(answer.nodes);
      } catch (error) {
        this.filterError.textContent = error instanceof ApiError ? error.text : String(error);
        this.filterError.hidden = false;
        return;
      }
    }
    for (const name of this.nodes.keys()) this.dirty.add(name);
    this.onDirty();
  }

  select(name) {
    if (this.selected) this.dirty.add(this.selected);
    this.selected = name;
    this.dirty.add(name);
    this.onDirty();
    this.drawDetail();
    this.onSelect(name);
  }

  drawDetail() {
    const n = this.nodes.get(this.selected);
    if (!n) return;
    const rows = [
      ["state", LABELS[nodeState(n)] || nodeState(n)],
      ["host", `${n.user ? `${n.user}@` : ""}${n.host}:${n.port}`],
      ["groups", (n.groups || []).join(", ")],
      ["link", n.link ?? "not managed"],
      ["link reason", n.link_reason || ""],
      ["failed", n.failed || ""],
    ];
    for (const [k, v] of Object.entries(n.attrs || {})) rows.push([`attr ${k}`, v]);
    for (const [k, v] of Object.entries(n.facts || {})) rows.push([k, typeof v === "object" ? JSON.stringify(v) : v]);
    const table = document.createElement("table");
    for (const [k, v] of rows) {
      if (v === "" || v === null || v === undefined) continue;
      const tr = table.insertRow();
      tr.insertCell().textContent = k;
      tr.insertCell().textContent = String(v);
    }
    const title = document.createElement("h3");
    title.textContent = n.name;
    this.detail.querySelector(".facts").replaceChildren(title, table);
    this.detail.hidden = false;
  }

  // Equirectangular dots over the shipped world outline (viewBox -180..180 × -90..90).
  drawMap() {
    const layer = this.map.querySelector("#map-dots");
    const dots = [];
    this.dots.clear();
    for (const n of this.nodes.values()) {
      const lat = Number(n.attrs?.lat), lon = Number(n.attrs?.lon);
      if (!Number.isFinite(lat) || !Number.isFinite(lon)) continue;
      const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      dot.setAttribute("cx", lon.toFixed(2));
      dot.setAttribute("cy", (-lat).toFixed(2));
      dot.setAttribute("r", "1.6");
      dot.setAttribute("class", `dot s-${nodeState(n)}`);
      dot.dataset.node = n.name;
      const t = document.createElementNS("http://www.w3.org/2000/svg", "title");
      t.textContent = this.hover(n.name);
      dot.append(t);
      dots.push(dot);
      this.dots.set(n.name, dot);
    }
    layer.replaceChildren(...dots);
  }
}
