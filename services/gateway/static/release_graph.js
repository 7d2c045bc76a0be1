// The release flow as graph data (pure): state -> {nodes, links} with deterministic keys
// ("start", "build:fetch", "build:hooks", "build:package", "host:<name>" lanes,
// "host:<name>:<step>", "pause" between a canary's lanes and the rest, "end") and a status
// on every node and link:
// waiting | running | succeeded | failed | skipped | rolled_back.

import { HOST_STEPS, isTerminal } from "./release_state.js";

export const STEP_LABELS = {
  upload: "upload",
  link: "link shared",
  pre_release: "pre-release",
  activate: "activate",
  restart: "restart",
  health: "health check",
  post_release: "post-release",
};

function fmtSeconds(d) {
  if (d == null) return "";
  if (d < 10) return `${d.toFixed(2)}s`;
  if (d < 60) return `${d.toFixed(1)}s`;
  return `${Math.floor(d / 60)}m ${Math.round(d % 60)}s`;
}

function buildStatuses(state) {
  const b = state.build;
  const terminal = isTerminal(state);
  const idle = terminal ? "skipped" : "waiting";
  let fetch = idle;
  let hooks = idle;
  let pack = idle;
  if (b.started) fetch = "running";
  if (b.fetch) {
    fetch = "succeeded";
    const expected = state.build_hooks.length;
    const ran = b.hooks.length;
    const hookFailed = b.hooks.some((h) => h.exit_code !== 0);
    if (hookFailed) hooks = "failed";
    else if (ran >= expected) hooks = "succeeded";
    else hooks = terminal ? "skipped" : "running";
    if (hooks === "succeeded") pack = terminal ? "skipped" : "running";
  }
  if (b.package) {
    fetch = "succeeded";
    hooks = "succeeded";
    pack = "succeeded";
  }
  if (b.failed) {
    if (b.failed.stage === "fetch") fetch = "failed";
    else if (b.failed.stage === "hooks") {
      hooks = "failed";
      pack = "skipped";
    } else {
      hooks = "succeeded";
      pack = "failed";
    }
  }
  return { fetch, hooks, pack };
}

function stepStatus(state, host, step) {
  const s = host.steps[step];
  if (host.status === "rolled_back" && step === "activate" && s && s.status === "succeeded") return "rolled_back";
  if (s) return s.status;
  if (host.status === "failed" && host.failed_step === step) return "failed";
  return isTerminal(state) || host.status === "failed" || host.status === "rolled_back" ? "skipped" : "waiting";
}

function startStatus(state) {
  switch (state.status) {
    case "new":
      return "waiting";
    case "awaiting_approval":
      return "running";
    case "rejected":
      return "skipped";
    default:
      return "succeeded";
  }
}

function endStatus(state) {
  switch (state.status) {
    case "succeeded":
      return "succeeded";
    case "failed":
      return "failed";
    case "cancelled":
    case "rejected":
      return "skipped";
    default:
      return "waiting";
  }
}

// A link lights up when work flowed along it: in the colour of where it went, except into
// the end, where each lane brings its own outcome.
function linkStatus(from, to, toKey) {
  if (toKey === "end") return ["succeeded", "failed", "rolled_back"].includes(from) ? from : "waiting";
  if (from !== "succeeded" || to === "waiting" || to === "skipped") return "waiting";
  return to;
}

export function graphOf(state) {
  const nodes = [];
  const links = [];
  const status = {};
  const node = (data) => {
    nodes.push(data);
    status[data.key] = data.status;
  };
  const link = (from, to) => links.push({ key: `${from}->${to}`, from, to, status: linkStatus(status[from], status[to], to) });

  const waitingApproval = state.status === "awaiting_approval";
  node({
    key: "start",
    category: "terminal",
    label: waitingApproval ? "approval" : "start",
    sub: waitingApproval ? "awaiting" : state.status === "rejected" ? "rejected" : "",
    status: startStatus(state),
    order: 0,
  });
  const b = buildStatuses(state);
  const hooksRan = state.build.hooks.length;
  node({ key: "build:fetch", category: "step", label: "fetch", sub: state.commit ? state.commit.slice(0, 10) : fmtSeconds(state.build.fetch?.duration), status: b.fetch, order: 1 });
  node({
    key: "build:hooks",
    category: "step",
    label: "build hooks",
    sub: `${hooksRan}/${state.build_hooks.length}`,
    status: b.hooks,
    order: 2,
  });
  node({
    key: "build:package",
    category: "step",
    label: "package",
    sub: state.artifact ? fmtSize(state.artifact.size) + (state.artifact.reused ? " reused" : "") : "",
    status: b.pack,
    order: 3,
  });
  for (const [i, name] of hostNames(state).entries()) {
    const h = state.hosts[name];
    const lane = `host:${name}`;
    const laneStatus = h.status === "waiting" && isTerminal(state) ? "skipped" : h.status;
    // Lanes are added before their steps so the group exists when a member refers to it.
    node({ key: lane, category: "lane", isGroup: true, label: name, sub: h.failure || "", status: laneStatus, order: 10 + i, host: name });
    for (const [j, step] of HOST_STEPS.entries()) {
      const st = h.steps[step];
      let sub = "";
      if (st && st.duration != null) sub = fmtSeconds(st.duration);
      if (st && st.exit_code != null && st.exit_code !== 0) sub = `exit ${st.exit_code}` + (sub ? ` · ${sub}` : "");
      node({
        key: `${lane}:${step}`,
        category: "step",
        group: lane,
        label: STEP_LABELS[step],
        sub,
        status: stepStatus(state, h, step),
        order: j,
        host: name,
        step,
      });
    }
  }
  const canary = canaryLanes(state);
  if (canary) {
    node({ key: "pause", category: "terminal", label: "pause", sub: pauseSub(state), status: pauseStatus(state), order: 500 });
  }
  node({ key: "end", category: "terminal", label: "end", sub: isTerminal(state) ? state.status : "", status: endStatus(state), order: 1000 });

  link("start", "build:fetch");
  link("build:fetch", "build:hooks");
  link("build:hooks", "build:package");
  const names = hostNames(state);
  for (const name of names) {
    const lane = `host:${name}`;
    const inCanary = canary && canary.first.includes(name);
    link(canary && !inCanary ? "pause" : "build:package", lane);
    for (let j = 0; j + 1 < HOST_STEPS.length; j++) link(`${lane}:${HOST_STEPS[j]}`, `${lane}:${HOST_STEPS[j + 1]}`);
    link(lane, inCanary ? "pause" : "end");
  }
  if (names.length === 0) link("build:package", "end");
  return { nodes, links };
}

// A canary with hosts beyond its batch: {first: canary host names, rest: the others}.
function canaryLanes(state) {
  if (state.strategy !== "canary") return null;
  const names = hostNames(state);
  const first = names.filter((n) => (state.canary_hosts || []).includes(n));
  const rest = names.filter((n) => !first.includes(n));
  return rest.length && first.length ? { first, rest } : null;
}

export function pauseStatus(state) {
  const p = state.pause;
  if (state.status === "paused") return "running";
  if (state.status === "cancelling" || (p && state.status === "cancelled")) return "rolled_back";
  if (p && p.resumed_by) return "succeeded";
  return isTerminal(state) ? "skipped" : "waiting";
}

function pauseSub(state) {
  const p = state.pause;
  if (!p) return "after the canary";
  if (p.resumed_by) return `resumed by ${p.resumed_by}`;
  if (state.status === "cancelling" || state.status === "cancelled") return "cancelled";
  return p.resume_at ? `until ${new Date(p.resume_at).toISOString().slice(11, 19)}Z` : "awaiting resume";
}

export function hostNames(state) {
  const order = state.host_order && state.host_order.length ? state.host_order : Object.keys(state.hosts);
  return order.filter((n) => n in state.hosts);
}

export function fmtSize(bytes) {
  if (bytes == null) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

export { fmtSeconds };
