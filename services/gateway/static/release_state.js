// The release's state folded from its events: a pure reducer mirroring ferry/domain/release/state.py's
// evolve. The page builds its initial picture and applies live WebSocket events with the same code,
// and the replay slider re-folds the history up to event N.
// It keeps a little more than the Python state (fetch and package durations, agents, rollback
// output) because the page shows them. Its words (host steps, statuses, event types) come from
// ferry_model.json, generated from the Python models (scripts/gen_model_json.py); both folds run
// the golden sequences of tests/contract/sequences (pytest, and node --test tests/js/).

import model from "./ferry_model.json" with { type: "json" };

export const MODEL = model;
export const HOST_STEPS = Object.freeze([...model.host_steps]);
export const TERMINAL = new Set(model.terminal_statuses);
export const EVENT_TYPES = new Set(model.event_types);

// An event type this reducer does not handle: refused, never guessed (ferry's UnknownEventType).
export class UnknownEventType extends Error {
  constructor(type) {
    super(`unknown event type ${JSON.stringify(type)}: this page does not handle it (reload the page)`);
    this.name = "UnknownEventType";
    this.type = type;
  }
}

export function initialState(releaseId) {
  return {
    release_id: releaseId,
    version: 0,
    last_seq: 0,
    status: "new",
    project: "",
    environment: "",
    ref: "",
    requested_by: "",
    requested_at: null,
    finished_at: null,
    require_approval: false,
    strategy: "all",
    canary_hosts: [], // the canary batch (plan order), empty unless the strategy is canary
    pause: null, // {at, resume_at, hosts_done, reason, resumed_by, resumed_at}
    cancel_requested_by: null,
    build_hooks: [],
    host_order: [],
    commit: null,
    artifact: null,
    reason: null,
    build: {
      started: false,
      fetch: null, // {duration}
      hooks: [], // [{index, command, exit_code, duration, output_tail}]
      failed: null, // {stage, reason, output_tail, log_digest}
      package: null, // {duration, log_digest}
    },
    hosts: {},
  };
}

export function isTerminal(state) {
  return TERMINAL.has(state.status);
}

function withHost(state, name, fn) {
  const prev = state.hosts[name] || newHost();
  return { ...state, hosts: { ...state.hosts, [name]: fn(prev) } };
}

function newHost() {
  return { status: "waiting", steps: {}, activated: false, previous_release: null, failure: null, failed_step: null };
}

// Fold one event (the wire JSON of ferry.domain.events) into the state; returns a new state.
// Release-level events are numbered on the release's subject, each host's events on its own
// (ferry/infra/eventstore.py), so only release-level events move `version`.
export function evolve(state, event) {
  if (!EVENT_TYPES.has(event.type)) throw new UnknownEventType(event.type);
  const s = model.host_event_types.includes(event.type) ? state : { ...state, version: event.version ?? state.version };
  switch (event.type) {
    case "release.requested": {
      const plan = event.plan || {};
      const hosts = {};
      for (const h of plan.hosts || []) hosts[h] = newHost();
      return {
        ...s,
        status: plan.require_approval ? "awaiting_approval" : "queued",
        project: event.project,
        environment: event.environment,
        ref: event.ref,
        requested_by: event.requested_by,
        requested_at: event.at,
        require_approval: !!plan.require_approval,
        strategy: plan.strategy || "all",
        canary_hosts: plan.strategy === "canary" ? (plan.hosts || []).slice(0, plan.canary_size || 1) : [],
        build_hooks: ((plan.recipe || {}).build_hooks || []).slice(),
        host_order: (plan.hosts || []).slice(),
        hosts,
      };
    }
    case "release.approved":
      return { ...s, status: "queued", approved_by: event.by };
    case "release.rejected":
      return { ...s, status: "rejected", reason: event.reason || "rejected", finished_at: event.at };
    case "build.started":
      return { ...s, status: "building", build: { ...s.build, started: true } };
    case "build.source_fetched":
      return { ...s, commit: event.commit, build: { ...s.build, fetch: { duration: event.duration ?? 0 } } };
    case "build.hook_finished": {
      const hook = {
        index: event.index,
        command: event.command,
        exit_code: event.exit_code,
        duration: event.duration,
        output_tail: event.output_tail || "",
      };
      return { ...s, build: { ...s.build, hooks: [...s.build.hooks, hook] } };
    }
    case "build.artifact_packaged":
      return {
        ...s,
        status: "deploying",
        artifact: { digest: event.digest, size: event.size, format: event.format, reused: !!event.reused },
        build: { ...s.build, package: { duration: event.duration ?? 0, log_digest: event.log_digest || null } },
      };
    case "build.failed":
      return {
        ...s,
        status: "failed",
        reason: `build ${event.stage} failed: ${event.reason}`,
        finished_at: event.at,
        build: {
          ...s.build,
          failed: {
            stage: event.stage,
            reason: event.reason,
            output_tail: event.output_tail || "",
            log_digest: event.log_digest || null,
          },
        },
      };
    case "host.step_started":
      return withHost(s, event.host, (h) => ({
        ...h,
        status: "running",
        steps: { ...h.steps, [event.step]: { status: "running", started_at: event.at, agent: event.agent || "" } },
      }));
    case "host.step_finished":
      return withHost(s, event.host, (h) => {
        const prev = h.steps[event.step];
        const ok = event.exit_code === 0;
        const detail = event.detail || {};
        const step = {
          status: ok ? "succeeded" : "failed",
          started_at: prev ? prev.started_at : event.at,
          agent: prev ? prev.agent : "",
          exit_code: event.exit_code,
          duration: event.duration,
          output_tail: event.output_tail || "",
          log_digest: typeof detail.log_digest === "string" ? detail.log_digest : null,
        };
        let previous = h.previous_release;
        if (event.step === "activate" && ok) previous = typeof detail.previous === "string" ? detail.previous : null;
        let releaseDir = h.release_dir ?? null; // a rollback that switched at once to a kept directory
        if (event.step === "upload" && ok) releaseDir = typeof detail.release_dir === "string" ? detail.release_dir : null;
        const done = ok && event.step === HOST_STEPS[HOST_STEPS.length - 1] && h.status === "running";
        return {
          ...h,
          steps: { ...h.steps, [event.step]: step },
          activated: h.activated || (event.step === "activate" && ok),
          previous_release: previous,
          release_dir: releaseDir,
          status: done ? "succeeded" : h.status,
        };
      });
    case "host.failed":
      return withHost(s, event.host, (h) => ({ ...h, status: "failed", failure: event.reason, failed_step: event.step }));
    case "host.rolled_back":
      return withHost(s, event.host, (h) => ({
        ...h,
        status: "rolled_back",
        rolled_back_to: event.to_release ?? null,
        rollback_output: event.output_tail || "",
        rollback_healthy: event.healthy ?? null,
        failure:
          event.healthy === false
            ? [h.failure, event.to_release ? `rolled back to ${event.to_release}, which failed its health check` : "could not be rolled back: it still runs this release"].filter(Boolean).join("; ")
            : h.failure,
      }));
    case "release.paused":
      return {
        ...s,
        status: "paused",
        pause: {
          at: event.at,
          resume_at: event.resume_at ?? null,
          hosts_done: (event.hosts_done || []).slice(),
          reason: event.reason || "",
          resumed_by: null,
          resumed_at: null,
        },
      };
    case "release.resumed":
      return {
        ...s,
        status: "deploying",
        pause: { ...(s.pause || {}), resumed_by: event.by, resumed_at: event.at },
      };
    case "release.cancel_requested":
      return { ...s, status: "cancelling", cancel_requested_by: event.by };
    case "release.succeeded":
      return { ...s, status: "succeeded", finished_at: event.at };
    case "release.failed":
      return { ...s, status: "failed", reason: event.reason, finished_at: event.at };
    case "release.cancelled":
      return { ...s, status: "cancelled", reason: event.reason || "cancelled", finished_at: event.at };
    default:
      throw new UnknownEventType(event.type); // a type of the model this reducer does not handle yet
  }
}

// Apply one stored event; repeats (seq at or below what was applied) change nothing.
export function apply(state, seq, event) {
  if (seq <= state.last_seq) return state;
  return { ...evolve(state, event), last_seq: seq };
}

// What the build shows: as ferry/domain/views.py's release view says it.
export function buildStatus(state) {
  const b = state.build;
  const status = b.failed ? "failed" : b.package ? "succeeded" : b.started ? "running" : "waiting";
  return isTerminal(state) && (status === "waiting" || status === "running") ? "cancelled" : status;
}

// The state's gist, as ferry.domain.views.summary gives it for the Python view: what the golden
// sequences expect of both.
export function summary(state) {
  const hosts = {};
  for (const name of state.host_order) {
    const h = state.hosts[name];
    const steps = {};
    for (const step of HOST_STEPS) if (h.steps[step]) steps[step] = h.steps[step].status;
    hosts[name] = { status: h.status, failure: h.failure, instant: h.release_dir ?? null, steps };
  }
  return {
    status: state.status,
    commit: state.commit,
    reason: state.reason,
    artifact: state.artifact ? state.artifact.digest : null,
    build: { status: buildStatus(state), hooks: state.build.hooks.length },
    pause: state.pause ? { hosts_done: [...state.pause.hosts_done], resumed_by: state.pause.resumed_by } : null,
    hosts,
  };
}

// Fold a list of {seq, event} from scratch.
export function replay(releaseId, stored) {
  let state = initialState(releaseId);
  for (const { seq, event } of stored) state = apply(state, seq, event);
  return state;
}
