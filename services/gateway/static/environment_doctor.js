// The project page's "Check drift" buttons: ask the gateway to read `current` on every host of
// an environment (through its agents; nothing changes) and list the hosts that differ.

async function check(button) {
  const out = document.getElementById(`doctor-${button.dataset.env}`);
  out.hidden = false;
  out.textContent = "Reading current on every host…";
  button.disabled = true;
  try {
    const url = `/api/projects/${encodeURIComponent(button.dataset.project)}/environments/${encodeURIComponent(button.dataset.env)}/doctor`;
    const res = await fetch(url, { headers: { Accept: "application/json" } });
    const body = await res.json();
    if (!res.ok) throw new Error((body.error && body.error.message) || `HTTP ${res.status}`);
    const lines = body.hosts.map((h) => {
      if (h.error) return `${h.name}: could not read (${h.error})`;
      if (h.drift) return `${h.name}: DRIFT — runs ${h.live || "nothing"}, the history says ${h.release || "nothing"}`;
      return `${h.name}: ok (${h.live || "never released"})`;
    });
    out.textContent = (body.drift.length ? `${body.drift.length} host(s) drifted\n` : "No drift\n") + lines.join("\n");
    out.dataset.drift = String(body.drift.length);
  } catch (e) {
    out.textContent = `Could not check: ${e.message}`;
  } finally {
    button.disabled = false;
  }
}

for (const button of document.querySelectorAll("button[data-doctor]")) {
  button.addEventListener("click", () => check(button));
}
