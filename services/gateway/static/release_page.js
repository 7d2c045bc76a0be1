// The release page: history from the API, folded by the reducer, drawn by GoJS, then kept
// live from the notifier's WebSocket starting at the last applied stream sequence.

import { apply, initialState, isTerminal, replay, UnknownEventType } from "./release_state.js";
import { fmtSeconds, fmtSize, graphOf } from "./release_graph.js";
import { ReleaseDiagram } from "./release_diagram.js";
import { renderPanel, showFullLog } from "./release_panel.js";

const root = document.getElementById("release");
const releaseId = root.dataset.releaseId;
const wsBase = root.dataset.wsBase;
const licenseKey = document.querySelector('meta[name="ferry-gojs-license-key"]')?.content || "";
const $ = (id) => document.getElementById(id);
const api = (path) => `/api/releases/${encodeURIComponent(releaseId)}${path}`;

const SILENCE_MS = 45000;

let state = initialState(releaseId);
let history = []; // every {seq, event} applied, in order: the replay slider's material
let replayAt = null; // null: live; a number: showing the first N events
let diagram = null;
let selected = null;

// --- loading and live updates -------------------------------------------------------
async function fetchJson(url, options) {
  const res = await fetch(url, { headers: { Accept: "application/json" }, ...options });
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const err = new Error(describeError(body, res.status));
    err.status = res.status;
    throw err;
  }
  return body;
}

function describeError(body, status) {
  if (body && typeof body === "object") {
    const e = body.error || body;
    const msg = e.message || e.detail || JSON.stringify(e);
    return e.field ? `${e.field}: ${msg}` : msg;
  }
  return `${status} ${body || ""}`.trim();
}

function applyStored(items) {
  let changed = false;
  for (const { seq, event } of items) {
    let next;
    try {
      next = apply(state, seq, event);
    } catch (err) {
      if (err instanceof UnknownEventType) outdated(err);
      throw err;
    }
    if (next !== state) {
      state = next;
      history.push({ seq, event });
      changed = true;
    }
  }
  if (changed) {
    window.ferryLastSeq = state.last_seq;
    window.ferryState = state;
    redraw();
  }
}

// An event this page cannot read (a newer ferry): say so and stop following, never guess.
function outdated(err) {
  live.stopped = true;
  if (live.ws) live.ws.close(1000, "unknown event type");
  live.status("stopped: reload the page");
  $("action-error").textContent = err.message;
  $("action-error").hidden = false;
}

// Everything after what we hold, from the event store through the API.
async function catchUp() {
  const body = await fetchJson(api("/events"));
  applyStored((body.events || []).filter((e) => e.seq > state.last_seq));
}

// A full reload: the notifier asked us to resync, so rebuild from the whole history.
async function reloadAll() {
  const body = await fetchJson(api("/events"));
  const events = body.events || [];
  state = replay(releaseId, events);
  history = events.slice();
  window.ferryLastSeq = state.last_seq;
  window.ferryState = state;
  redraw();
}

const live = {
  ws: null,
  attempt: 0,
  timer: null,
  connect() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    if (isTerminal(state)) return this.status("finished");
    let ws;
    try {
      ws = new WebSocket(`${wsBase}/ws/releases/${encodeURIComponent(releaseId)}?since=${state.last_seq}`);
    } catch (err) {
      return this.retry(err);
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.status("live");
      this.watch(ws);
    };
    ws.onmessage = (msg) => {
      this.watch(ws);
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (frame.kind === "event") {
        applyStored([{ seq: frame.seq, event: frame.event }]);
        if (isTerminal(state)) ws.close(1000, "release finished");
      } else if (frame.kind === "resync") {
        this.resync = true;
        ws.close(1000, "resync");
      }
    };
    ws.onclose = () => {
      clearTimeout(this.watchdog);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (this.resync) {
        this.resync = false;
        this.status("resyncing");
        reloadAll().then(() => this.connect(), (err) => this.retry(err));
        return;
      }
      if (isTerminal(state)) return this.status("finished");
      this.retry();
    };
  },
  // The notifier sends a heartbeat every 15 s or so: a silent socket is a dead one.
  watch(ws) {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      if (this.ws === ws) ws.close(4000, "no heartbeat");
    }, SILENCE_MS);
  },
  // Back-off with jitter; before reconnecting, take what was missed from the API so the
  // picture is right even while the notifier is away.
  retry() {
    if (this.stopped) return;
    const delay = Math.min(8000, 400 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.status(`reconnecting in ${(delay / 1000).toFixed(1)}s`);
    this.timer = setTimeout(async () => {
      try {
        await catchUp();
      } catch {
        /* the API is away too: try again later */
      }
      this.connect();
    }, delay);
  },
  status(text) {
    $("f-live").textContent = text;
    root.dataset.live = text.split(" ")[0];
  },
};

// --- drawing ---------------------------------------------------------------------
function shown() {
  return replayAt === null ? state : replay(releaseId, history.slice(0, replayAt));
}

function redraw() {
  const s = shown();
  renderHeader(state);
  if (diagram) diagram.render(graphOf(s));
  renderReplay();
  if (selected) renderPanel(selected, s);
}

function renderHeader(s) {
  const badge = $("status-badge");
  badge.textContent = s.status.replace("_", " ");
  badge.className = `badge status-${s.status}`;
  document.title = `${s.status} · ${s.project || "release"} ${releaseId} · ferry`;
  const link = $("project-link");
  if (s.project) {
    link.textContent = s.project;
    link.href = `/projects/${encodeURIComponent(s.project)}`;
  }
  $("f-environment").textContent = s.environment || "–";
  $("f-ref").textContent = s.ref || "–";
  $("f-commit").textContent = s.commit ? s.commit.slice(0, 12) : "–";
  $("f-commit").title = s.commit || "";
  $("f-artifact").textContent = s.artifact
    ? `${fmtSize(s.artifact.size)} ${s.artifact.format}${s.artifact.reused ? " (reused)" : ""}`
    : "–";
  $("f-requested-by").textContent = s.requested_by || "–";
  $("f-duration").textContent = duration(s);
  const reason = $("f-reason");
  reason.hidden = !s.reason;
  reason.textContent = s.reason || "";
  const anyActivated = Object.values(s.hosts).some((h) => h.activated);
  $("btn-approve").hidden = s.status !== "awaiting_approval";
  $("btn-resume").hidden = s.status !== "paused";
  const banner = $("pause-banner");
  banner.hidden = s.status !== "paused";
  if (s.status === "paused" && s.pause) {
    const done = s.pause.hosts_done.join(", ") || "no host";
    const when = s.pause.resume_at ? `resumes by itself at ${new Date(s.pause.resume_at).toLocaleTimeString()}` : "waits for Resume";
    banner.textContent = `Paused after the canary (${done} on the new version): ${when}. Cancel rolls the canary back.`;
  }
  $("btn-reject").hidden = s.status !== "awaiting_approval";
  // a cancel is taken at any moment: switched hosts go back to their old release first
  $("btn-cancel").hidden = isTerminal(s) || s.status === "new" || s.status === "cancelling";
  $("btn-cancel").title = anyActivated ? "Stop, and roll back the hosts that switched" : "Stop this release";
  $("btn-rollback").hidden = !(isTerminal(s) && s.artifact);
  const unfinished = Object.values(s.hosts).some((h) => h.status !== "succeeded");
  $("btn-retry").hidden = !(isTerminal(s) && s.artifact && unfinished);
}

function duration(s) {
  if (!s.requested_at) return "–";
  const end = s.finished_at ? Date.parse(s.finished_at) : Date.now();
  const secs = Math.max(0, (end - Date.parse(s.requested_at)) / 1000);
  return fmtSeconds(secs) + (s.finished_at ? "" : " so far");
}

// --- replay ------------------------------------------------------------------------
let playTimer = null;

function renderReplay() {
  const section = $("replay");
  const finished = isTerminal(state);
  section.hidden = !finished;
  if (!finished) return;
  const slider = $("replay-slider");
  slider.max = String(history.length);
  const at = replayAt === null ? history.length : replayAt;
  slider.value = String(at);
  const ev = history[at - 1];
  $("replay-label").textContent = `${at}/${history.length}${ev ? ` · ${ev.event.type}${ev.event.host ? ` ${ev.event.host}` : ""}${ev.event.step ? ` ${ev.event.step}` : ""}` : ""}`;
  $("replay-play").textContent = playTimer ? "⏸" : "▶";
  $("replay-play").setAttribute("aria-label", playTimer ? "pause" : "play");
}

function seek(n) {
  replayAt = n >= history.length ? null : Math.max(0, n);
  window.ferryReplayAt = replayAt;
  redraw();
}

function togglePlay() {
  if (playTimer) {
    clearInterval(playTimer);
    playTimer = null;
    return renderReplay();
  }
  if (replayAt === null) seek(0);
  // About 15 seconds for a whole history, never faster than a frame per 60 ms.
  const every = Math.max(60, Math.min(450, 15000 / Math.max(1, history.length)));
  playTimer = setInterval(() => {
    const next = (replayAt ?? history.length) + 1;
    if (next >= history.length) {
      clearInterval(playTimer);
      playTimer = null;
    }
    seek(next);
  }, every);
  renderReplay();
}

// --- actions -------------------------------------------------------------------------
async function act(action) {
  const err = $("action-error");
  err.hidden = true;
  try {
    let body = {};
    if (action !== "approve" && action !== "resume") {
      const reason = window.prompt(`Reason to ${action} this release (optional)`, "");
      if (reason === null) return;
      body = { reason };
    }
    await fetchJson(api(`/${action}`), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    await catchUp();
  } catch (e) {
    err.textContent = `Could not ${action}: ${e.message}`;
    err.hidden = false;
  }
}

async function retry() {
  const err = $("action-error");
  err.hidden = true;
  try {
    const created = await fetchJson(api("/retry"), { method: "POST", headers: { Accept: "application/json" } });
    window.location.assign(`/releases/${encodeURIComponent(created.id)}`);
  } catch (e) {
    err.textContent = `Could not retry: ${e.message}`;
    err.hidden = false;
  }
}

async function rollBack() {
  const err = $("action-error");
  err.hidden = true;
  if (!window.confirm("Release this release's commit again to its environment?")) return;
  try {
    const created = await fetchJson(api("/rollback"), {
      method: "POST",
      headers: { Accept: "application/json" },
    });
    window.location.assign(`/releases/${encodeURIComponent(created.id)}`);
  } catch (e) {
    err.textContent = `Could not roll back: ${e.message}`;
    err.hidden = false;
  }
}

// --- start -----------------------------------------------------------------------------
function boot() {
  if (globalThis.go) {
    diagram = new ReleaseDiagram($("diagram"), {
      licenseKey,
      onNodeClick: (key) => {
        selected = key;
        renderPanel(key, shown());
      },
    });
    window.ferryDiagram = diagram.diagram;
    $("zoom-fit").onclick = () => diagram.zoomToFit();
    $("zoom-in").onclick = () => diagram.zoom(1.25);
    $("zoom-out").onclick = () => diagram.zoom(0.8);
  } else {
    $("diagram").hidden = true;
  }
  $("panel-close").onclick = () => {
    selected = null;
    $("panel").hidden = true;
    delete $("panel").dataset.key;
    if (diagram) diagram.diagram.clearSelection();
  };
  $("panel-full-log").onclick = () => showFullLog(api(`/logs/${encodeURIComponent($("panel-full-log").dataset.digest)}`));
  $("replay-slider").oninput = (e) => seek(Number(e.target.value));
  $("replay-play").onclick = togglePlay;
  $("replay-live").onclick = () => seek(history.length);
  $("btn-approve").onclick = () => act("approve");
  $("btn-resume").onclick = () => act("resume");
  $("btn-reject").onclick = () => act("reject");
  $("btn-cancel").onclick = () => act("cancel");
  $("btn-rollback").onclick = rollBack;
  $("btn-retry").onclick = retry;
  setInterval(() => {
    if (!isTerminal(state)) $("f-duration").textContent = duration(state);
  }, 1000);

  window.ferryLastSeq = 0;
  window.ferryReplay = seek;
  reloadAll()
    .then(() => {
      root.dataset.loaded = "true";
      live.connect();
    })
    .catch((err) => {
      live.status(`could not load: ${err.message}`);
      live.retry();
    });
}

boot();
