// The new-release form: a branch / tag / commit picker fed by /api/projects/{project}/refs,
// posted to /api/releases as JSON; on 202 the browser goes to the release page.

const form = document.getElementById("release-form");
const project = form.dataset.project;
const $ = (id) => document.getElementById(id);
const status = $("ref-status");
const errorBox = $("form-error");

function kind() {
  return form.querySelector('input[name="ref_kind"]:checked').value;
}

function showKind() {
  for (const el of form.querySelectorAll(".ref-input")) el.hidden = el.dataset.kind !== kind();
}

function fill(select, refs, what) {
  select.replaceChildren();
  if (!refs.length) {
    const opt = new Option(`no ${what}`, "");
    opt.disabled = true;
    select.append(opt);
    return;
  }
  for (const r of refs) select.append(new Option(`${r.name} — ${(r.commit || "").slice(0, 10)}`, r.name));
}

async function loadRefs() {
  status.textContent = "Loading branches and tags…";
  try {
    const res = await fetch(`/api/projects/${encodeURIComponent(project)}/refs`, { headers: { Accept: "application/json" } });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error?.message || `${res.status}`);
    const branches = body.branches || [];
    fill($("ref-branch"), branches, "branches");
    fill($("ref-tag"), body.tags || [], "tags");
    const preferred = branches.find((b) => b.name === "main" || b.name === "master");
    if (preferred) $("ref-branch").value = preferred.name;
    status.textContent = `${branches.length} branches, ${(body.tags || []).length} tags.`;
  } catch (err) {
    fill($("ref-branch"), [], "branches");
    fill($("ref-tag"), [], "tags");
    status.textContent = `Could not list the repository's refs (${err.message}); you can still give a commit.`;
    form.querySelector('input[value="commit"]').checked = true;
    showKind();
  }
}

function chosenRef() {
  switch (kind()) {
    case "branch":
      return $("ref-branch").value;
    case "tag":
      return $("ref-tag").value;
    default:
      return $("ref-commit").value.trim();
  }
}

function showError(message, field) {
  errorBox.textContent = message;
  errorBox.hidden = false;
  const target = field === "environment" ? $("environment") : field === "ref" ? $(`ref-${kind()}`) : null;
  if (target) {
    target.setAttribute("aria-invalid", "true");
    target.focus();
  }
}

form.addEventListener("change", (e) => {
  if (e.target.name === "ref_kind") showKind();
});

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  errorBox.hidden = true;
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const ref = chosenRef();
  if (!ref) return showError("Choose a branch or a tag, or give a commit.", "ref");
  if (kind() === "commit" && !/^[0-9a-fA-F]{4,64}$/.test(ref)) {
    return showError("A commit is 4 to 64 hexadecimal characters.", "ref");
  }
  const submit = $("submit");
  submit.disabled = true;
  try {
    const res = await fetch("/api/releases", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ project, environment: $("environment").value, ref }),
    });
    const body = await res.json().catch(() => ({}));
    if (res.status !== 202 && !res.ok) {
      const err = body.error || {};
      return showError(err.field ? `${err.field}: ${err.message}` : err.message || `The release was refused (${res.status}).`, err.field);
    }
    window.location.assign(`/releases/${encodeURIComponent(body.id)}`);
  } catch (err) {
    showError(`Could not reach the server: ${err.message}`);
  } finally {
    submit.disabled = false;
  }
});

showKind();
loadRefs();
