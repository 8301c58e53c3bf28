// The apps, pushes and node-programs panels: each reads the API when shown and again
// (at most once per REFRESH ms) when an event says its subject changed.
import { ApiError, get, post } from "./api.js";

const REFRESH = 400;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c))))));
}

// Refreshes coalesced: a burst of events triggers one read.
class Coalesced {
  constructor(run) { this.run = run; this.timer = null; }
  soon() {
    if (this.timer === null) this.timer = setTimeout(() => { this.timer = null; this.run(); }, REFRESH);
  }
}

export function showError(target, error) {
  target.textContent = error instanceof ApiError ? error.text : String(error);
  target.hidden = false;
}

export class Apps {
  constructor(root, status) {
    this.list = root.querySelector("#apps-list");
    this.view = root.querySelector("#app-view");
    this.error = root.querySelector("#apps-error");
    this.status = status;
    this.current = null;
    this.records = [];
    this.refresh = new Coalesced(() => this.load());
    root.querySelector("#app-up-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const spec = root.querySelector("#app-spec").value.trim();
      if (spec) this.act(() => post("/apps", { spec }), `up ${spec}`);
    });
  }

  async act(call, what) {
    this.error.hidden = true;
    try {
      const answer = await call();
      this.status(`${what}: ${answer && answer.accepted ? "accepted" : "done"}`);
      if (answer && answer.app) this.current = answer.app;
      this.refresh.soon();
    } catch (error) {
      showError(this.error, error);
    }
  }

  event(e) {
    if (e.topic === "app" || (e.topic === "agent" && this.members().has(e.node))) this.refresh.soon();
  }

  members() {
    return new Set((this.shownStatus?.nodes || []).map((m) => m.node));
  }

  async load() {
    try {
      this.records = await get("/apps");
    } catch (error) {
      showError(this.error, error);
      return;
    }
    this.list.replaceChildren(table(["app", "status", "phase", "active", "kept", ""],
      this.records.map((a) => [a.app, a.status, a.phase ?? "", String(a.active), a.kept ? "yes" : "no",
        el("button", { class: "open", "data-app": a.app, onclick: () => { this.current = a.app; this.load(); } }, "open")])));
    if (this.current && !this.records.some((a) => a.app === this.current)) this.current = null;  // gone
    if (!this.current && this.records.length) this.current = this.records[0].app;
    if (this.current) await this.drawApp(this.current);
    else {
      this.shownStatus = null;
      this.view.replaceChildren();
    }
  }

  async drawApp(name) {
    let s;
    try {
      s = await get(`/apps/${encodeURIComponent(name)}`);
    } catch (error) {
      showError(this.error, error);
      return;
    }
    this.shownStatus = s;
    const record = this.records.find((a) => a.app === name) || {};
    const barriers = Object.entries(s.barriers || {}).map(([b, v]) => el("div", { class: "barrier", "data-barrier": b },
      el("span", {}, `${b} `), el("progress", { max: String(v.needed || 1), value: String(v.arrived) }),
      el("span", { class: "arrived" }, ` ${v.arrived}/${v.needed}${v.released ? " released" : ""}`)));
    const rows = (s.nodes || []).map((m) => [m.component, m.node, String(m.slot), m.state,
      el("span", {}, ...(m.programs || []).map((p) => el("span", { class: `proc p-${p.state}` },
        `${p.name} ${p.state} `,
        el("button", { class: "restart", onclick: () => this.act(() => post("/proc/restart", { selection: m.node, name: p.name }), `restart ${p.name} on ${m.node}`) }, "restart")))),
      m.detail || ""]);
    const actions = el("div", { class: "actions" },
      el("button", { id: "app-down", onclick: () => this.act(() => post(`/apps/${encodeURIComponent(name)}/down`), `down ${name}`) }, "down"),
      record.file ? el("button", { id: "app-rerun", onclick: () => this.act(() => post("/apps", { spec: record.file }), `rerun ${name}`) }, "rerun failed") : null);
    const specText = await get(`/apps/${encodeURIComponent(name)}/spec`).then(
      (doc) => JSON.stringify(doc.spec ?? doc, null, 2), (error) => error.message);
    const spec = el("details", {}, el("summary", {}, `spec${record.file ? ` (${record.file})` : ""}`), el("pre", { class: "spec" }, specText));
    this.view.replaceChildren(el("h3", {}, `${s.app}: ${s.status}${s.healthy ? " (healthy)" : ""}`),
      actions, el("div", { class: "barriers" }, ...barriers),
      table(["component", "member", "slot", "state", "programs", "detail"], rows), spec);
  }
}

export class Pushes {
  constructor(root, status) {
    this.view = root.querySelector("#pushes-view");
    this.versions = root.querySelector("#versions-view");
    this.error = root.querySelector("#pushes-error");
    this.status = status;
    this.shown = new Map();    // push id -> its block
    this.following = new Set();
    this.known = new Map();    // push id -> what is known of it (the API's object)
    this.pending = new Set();  // push ids to draw at the next frame
    this.scheduled = false;
    const value = (id) => root.querySelector(id).value.trim();
    root.querySelector("#push-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.guard(async () => {
        const started = await post("/pushes", { source_dir: value("#push-source"), remote_dir: value("#push-dir"),
          selection: value("#push-selection") || undefined });
        this.status(`push ${started.id}: started`);
        await this.load();
      });
    });
    root.querySelector("#rollback-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.guard(async () => {
        const remote_dir = value("#rollback-dir");
        await post("/rollback", { remote_dir, selection: value("#rollback-selection") || undefined });
        this.status(`rollback ${remote_dir}: done`);
        await this.drawVersions(remote_dir);
      });
    });
  }

  async guard(work) {
    this.error.hidden = true;
    try {
      await work();
    } catch (error) {
      showError(this.error, error);
    }
  }

  event() {}  // pushes are followed on their own progress stream, not the event stream

  load() {
    return this.guard(async () => {
      const pushes = (await get("/pushes")).slice(-5).reverse();
      if (!pushes.length) this.view.replaceChildren(el("p", {}, "no pushes yet"));
      else this.view.replaceChildren(...pushes.map((p) => this.block(p)));
      for (const p of pushes) {
        if (p.state === "running") this.follow(p.id);
        else this.item(p.id, { end: await get(`/pushes/${encodeURIComponent(p.id)}`) });
      }
      if (pushes.length && pushes[0].request?.remote_dir) await this.drawVersions(pushes[0].request.remote_dir);
    });
  }

  block(p) {
    this.known.set(p.id, { ...(this.known.get(p.id) || {}), ...p });
    const block = this.shown.get(p.id) || el("div", { class: "push", "data-push": p.id });
    this.shown.set(p.id, block);
    if (!block.childNodes.length) this.fill(block, p, p.progress);
    return block;
  }

  // The push's progress stream (NDJSON, pushed by the service as bytes move).
  async follow(id) {
    if (this.following.has(id)) return;
    this.following.add(id);
    try {
      const response = await fetch(`/api/v1/pushes/${encodeURIComponent(id)}/progress?follow=1`,
        { headers: { "Shoal-Protocol": "1" }, credentials: "same-origin" });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const lines = buffer.split("\n");
        buffer = lines.pop();
        for (const line of lines) if (line.trim()) this.item(id, JSON.parse(line));
      }
    } finally {
      this.following.delete(id);
    }
    this.item(id, { end: await get(`/pushes/${encodeURIComponent(id)}`) });
    const dir = this.known.get(id)?.request?.remote_dir;
    if (dir) await this.drawVersions(dir);
  }

  item(id, item) {
    const known = this.known.get(id) || { id };
    if (item.progress) known.progress = item.progress;
    if (item.result) known.results = [...(known.results || []), item.result];
    if (item.end) Object.assign(known, item.end, { progress: item.end.progress ?? known.progress });
    this.known.set(id, known);
    this.pending.add(id);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => {
        this.scheduled = false;
        for (const pid of this.pending) this.draw(pid);
        this.pending.clear();
      });
    }
  }

  draw(id) {
    const block = this.shown.get(id);
    const p = this.known.get(id);
    if (block && p) this.fill(block, p, p.progress);
  }

  fill(block, p, progress) {
    const nodes = progress?.nodes || {};
    for (const r of p.results || []) nodes[r.node] = { ...(nodes[r.node] || {}), ...r, need_bytes: nodes[r.node]?.need_bytes ?? r.received };
    const rows = Object.entries(nodes).map(([node, n]) => [node,
      el("progress", { max: String(n.need_bytes || 1), value: String(n.need_bytes ? n.received : (n.state === "ok" || n.status === "ok" ? 1 : 0)) }),
      String(n.received ?? 0), String(n.from_source ?? ""), String(n.from_peers ?? ""), String(n.state || n.status || "")]);
    const totals = progress ? `${progress.received}/${progress.needed} bytes, ${progress.nodes_done}/${progress.nodes_total} nodes done` : "";
    const request = p.request || {};
    block.dataset.state = p.state || "";
    block.replaceChildren(...[
      el("h3", {}, `push ${p.id}: ${p.state || ""} ${request.source_dir || ""} → ${request.remote_dir || ""}`),
      el("p", {}, totals, progress ? ` · source egress ${progress.source_sent} bytes` : "",
        p.summary?.version ? ` · version ${p.summary.version}` : ""),
      p.error ? el("pre", { class: "error" }, typeof p.error === "string" ? p.error : p.error.error) : null,
      table(["node", "progress", "received", "from source", "from peers", "state"], rows),
    ].filter(Boolean));
  }

  async drawVersions(remoteDir) {
    const records = await get(`/versions?remote_dir=${encodeURIComponent(remoteDir)}`);
    this.versions.replaceChildren(el("p", {}, remoteDir), table(["node", "current", "kept"], records.map((r) =>
      [r.node, String(r.value?.current ?? r.error ?? ""), (r.value?.versions || []).map((v) => v.version ?? v).join(" ")])));
  }
}

// A node's programs and the tail of one program's log (node detail panel).
export class NodePrograms {
  constructor(root) {
    this.box = root.querySelector("#node-programs");
    this.log = root.querySelector("#node-log");
  }

  async show(name) {
    this.log.hidden = true;
    this.box.replaceChildren(el("p", {}, "reading programs…"));
    let lines;
    try {
      lines = await post("/proc/status", { selection: name });
    } catch (error) {
      this.box.replaceChildren(el("p", { class: "error" }, error instanceof ApiError ? error.text : String(error)));
      return;
    }
    const records = String(lines).split("\n").filter(Boolean).map((l) => JSON.parse(l)).filter((r) => r.node === name);
    const programs = records.flatMap((r) => (Array.isArray(r.value) ? r.value : r.value?.programs || []));
    if (!programs.length) {
      const why = records.find((r) => r.error)?.error;
      this.box.replaceChildren(el("p", {}, why ? `no programs: ${why}` : "no programs"));
      return;
    }
    this.box.replaceChildren(table(["program", "state", "pid", ""], programs.map((p) => [p.name, p.state, String(p.pid ?? ""),
      el("button", { class: "log", onclick: () => this.tail(name, p.name) }, "log")])));
  }

  async tail(node, program) {
    try {
      const text = await post("/proc/logs", { selection: node, name: program, lines: 50 });
      const record = String(text).split("\n").filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.node === node);
      const value = record?.value;
      this.log.textContent = typeof value === "string" ? value : value?.text ?? JSON.stringify(value ?? record, null, 1);
    } catch (error) {
      this.log.textContent = error instanceof ApiError ? error.text : String(error);
    }
    this.log.hidden = false;
  }
}
