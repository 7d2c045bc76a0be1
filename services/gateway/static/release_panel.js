// The side panel: what a clicked node did (facts, output tail) and its full log on demand.
// detailOf is pure (state -> what to show); renderPanel writes it into the page.

import { fmtSeconds, fmtSize, STEP_LABELS } from "./release_graph.js";

const $ = (id) => document.getElementById(id);

export function detailOf(key, s) {
  const b = s.build;
  if (key === "start") {
    return {
      title: "Requested",
      facts: { "requested by": s.requested_by, at: s.requested_at, ref: s.ref, approved_by: s.approved_by },
      output: s.status === "awaiting_approval" ? "Waiting for approval." : "",
    };
  }
  if (key === "end") return { title: "Outcome", facts: { status: s.status, finished: s.finished_at }, output: s.reason || "" };
  if (key === "build:fetch") {
    const failed = b.failed?.stage === "fetch" ? b.failed : null;
    return {
      title: "Fetch source",
      facts: { commit: s.commit, duration: b.fetch ? fmtSeconds(b.fetch.duration) : null },
      output: failed ? `${failed.reason}\n${failed.output_tail}` : "",
      log: failed?.log_digest,
    };
  }
  if (key === "build:hooks") {
    const failed = b.failed?.stage === "hooks" ? b.failed : null;
    const out = b.hooks
      .map((h) => `$ ${h.command}\n${h.output_tail}${h.output_tail.endsWith("\n") || !h.output_tail ? "" : "\n"}→ exit ${h.exit_code} in ${fmtSeconds(h.duration)}`)
      .join("\n\n");
    const last = b.hooks[b.hooks.length - 1];
    return {
      title: "Build hooks",
      facts: {
        hooks: `${b.hooks.length}/${s.build_hooks.length}`,
        "exit code": last ? last.exit_code : null,
        duration: b.hooks.length ? fmtSeconds(b.hooks.reduce((t, h) => t + h.duration, 0)) : null,
      },
      output: (out || (s.build_hooks.length ? "" : "This project has no build hooks.")) + (failed ? `\n\n${failed.reason}` : ""),
      log: failed?.log_digest || b.package?.log_digest,
    };
  }
  if (key === "build:package") {
    const failed = b.failed?.stage === "package" ? b.failed : null;
    return {
      title: "Package",
      facts: {
        digest: s.artifact?.digest,
        size: s.artifact ? fmtSize(s.artifact.size) : null,
        format: s.artifact?.format,
        reused: s.artifact ? String(s.artifact.reused) : null,
        duration: b.package ? fmtSeconds(b.package.duration) : null,
      },
      output: failed ? `${failed.reason}\n${failed.output_tail}` : "",
      log: failed?.log_digest || b.package?.log_digest,
    };
  }
  const parts = key.split(":");
  const host = parts[1];
  const h = s.hosts[host];
  if (!h) return { title: key, facts: {}, output: "" };
  if (parts.length === 2) {
    return {
      title: `Host ${host}`,
      facts: {
        status: h.status,
        failure: h.failure,
        "rolled back to": h.rolled_back_to,
        "switched instantly to": h.release_dir ? `releases/${h.release_dir} (kept on the host; nothing sent)` : null,
      },
      output: h.rollback_output || "",
    };
  }
  const step = parts.slice(2).join(":");
  const st = h.steps[step];
  return {
    title: `${host} · ${STEP_LABELS[step] || step}`,
    facts: {
      status: st ? st.status : h.failed_step === step ? "failed" : "waiting",
      "exit code": st?.exit_code,
      duration: st?.duration != null ? fmtSeconds(st.duration) : null,
      started: st?.started_at,
      agent: st?.agent,
      failure: h.failed_step === step ? h.failure : null,
    },
    output: st?.output_tail || "",
    log: st?.log_digest,
  };
}

export function renderPanel(key, s) {
  const d = detailOf(key, s);
  $("panel").hidden = false;
  $("panel").dataset.key = key;
  $("panel-title").textContent = d.title;
  const facts = $("panel-facts");
  facts.replaceChildren();
  for (const [k, v] of Object.entries(d.facts)) {
    if (v == null || v === "") continue;
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    div.append(dt, dd);
    facts.append(div);
  }
  $("panel-output").textContent = d.output || "(no output)";
  const btn = $("panel-full-log");
  if (btn.dataset.digest !== (d.log || "")) {
    $("panel-full").hidden = true;
    $("panel-full").textContent = "";
  }
  btn.hidden = !d.log;
  btn.dataset.digest = d.log || "";
}

export async function showFullLog(url) {
  const pre = $("panel-full");
  pre.hidden = false;
  pre.textContent = "loading…";
  try {
    const res = await fetch(url);
    pre.textContent = res.ok ? await res.text() : `could not load the log: ${res.status}`;
  } catch (err) {
    pre.textContent = `could not load the log: ${err}`;
  }
}
