// token-broker exchange tester: talks to the admin API on the same origin
// (GET /admin/info, POST /admin/exchange, POST /admin/revoke). Renders with textContent only, never innerHTML:
// Keycloak's answers are shown as data, not markup.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let credential = "";

  function pretty(v) {
    return v === null || v === undefined ? "(none)" : JSON.stringify(v, null, 2);
  }

  async function api(method, path, body) {
    const opts = { method, headers: { Authorization: "Bearer " + credential } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    let data = null;
    try { data = await r.json(); } catch (_) { data = null; }
    return { status: r.status, data };
  }

  async function connect() {
    credential = $("admin-token").value.trim();
    $("status").textContent = "connecting…";
    const { status, data } = await api("GET", "/admin/info");
    if (status !== 200 || !data) {
      $("status").textContent = "refused (HTTP " + status + "): " + ((data && data.error_description) || "");
      $("form").hidden = true;
      return;
    }
    $("status").textContent = "connected";
    const sel = $("target");
    sel.replaceChildren();
    for (const t of data.targets) {
      const o = document.createElement("option");
      o.value = t.name;
      o.textContent = t.name + " (audience " + t.audience + ", fallback " + t.fallback + ")";
      sel.appendChild(o);
    }
    const du = $("dev-user");
    const paste = document.createElement("option");
    paste.value = "";
    paste.textContent = "(paste a token below)";
    du.replaceChildren(paste);
    for (const u of data.dev_users) {
      const o = document.createElement("option");
      o.value = u.id;
      o.textContent = u.label;
      du.appendChild(o);
    }
    $("dev-user-box").hidden = data.dev_users.length === 0;
    $("issuer").textContent = "Keycloak issuer " + data.issuer + ", broker client " + data.client_id;
    $("form").hidden = false;
    $("revoke-box").hidden = false;
  }

  async function revoke() {
    const value = $("revoke-value").value.trim();
    if (!value) { $("revoke-status").textContent = "enter a sid or sub"; return; }
    const body = {};
    body[$("revoke-kind").value] = value;
    const { status, data } = await api("POST", "/admin/revoke", body);
    $("revoke-status").textContent = status === 200
      ? "evicted: the next request of that " + ($("revoke-kind").value === "sid" ? "session" : "user") + " goes to Keycloak"
      : "refused (HTTP " + status + "): " + ((data && data.error_description) || "");
  }

  function renderChecks(checks) {
    const body = $("checks").tBodies[0];
    body.replaceChildren();
    for (const c of checks) {
      const tr = document.createElement("tr");
      tr.className = c.status === "n/a" ? "na" : c.status;
      const mark = document.createElement("td");
      mark.className = "mark";
      mark.textContent = c.ok === true ? "✔ pass" : c.ok === false ? "✘ fail" : c.status === "n/a" ? "– n/a" : "? —";
      const name = document.createElement("td");
      name.textContent = c.name;
      const detail = document.createElement("td");
      const d = document.createElement("div");
      d.textContent = c.detail;
      detail.appendChild(d);
      if (c.ok === false) {
        const f = document.createElement("div");
        f.className = "fix";
        f.textContent = "Fix: " + c.fix;
        detail.appendChild(f);
      }
      tr.append(mark, name, detail);
      body.appendChild(tr);
    }
  }

  async function tryIt() {
    const body = { target: $("target").value };
    const pasted = $("subject-token").value.trim();
    if (pasted) body.subject_token = pasted;
    else if ($("dev-user").value) body.dev_user = $("dev-user").value;
    $("try").disabled = true;
    $("summary").textContent = "exchanging…";
    $("summary").className = "";
    $("result").hidden = false;
    try {
      const { status, data } = await api("POST", "/admin/exchange", body);
      if (status !== 200 || !data) {
        $("summary").className = "error";
        $("summary").textContent = "The tester refused (HTTP " + status + "): " + ((data && data.error_description) || "");
        $("hint").hidden = true;
        renderChecks([]);
        for (const id of ["request", "response", "subject-claims", "result-claims"]) $(id).textContent = "";
        return;
      }
      $("summary").className = data.outcome;
      $("summary").textContent = (data.outcome === "success" ? "✔ " : "✘ ") + data.summary;
      $("hint").hidden = !data.hint;
      $("hint").textContent = data.hint ? "Fix: " + data.hint : "";
      renderChecks(data.checks);
      const req = data.request;
      $("request").textContent = req
        ? req.method + " " + req.url + "\n" + req.headers.map((h) => h[0] + ": " + h[1]).join("\n") +
          "\n\n" + req.form.map((f) => f[0] + "=" + f[1]).join("\n")
        : "(not sent)";
      $("response").textContent = data.response
        ? "HTTP " + data.response.status + "\n" + pretty(data.response.body)
        : "(no answer)";
      $("subject-claims").textContent = data.subject_claims
        ? "header " + pretty(data.subject_claims.header) + "\nclaims " + pretty(data.subject_claims.claims)
        : "(not a decodable JWT)";
      $("result-claims").textContent = data.result_claims
        ? "header " + pretty(data.result_claims.header) + "\nclaims " + pretty(data.result_claims.claims)
        : "(none)";
    } finally {
      $("try").disabled = false;
    }
  }

  $("connect").addEventListener("click", connect);
  $("admin-token").addEventListener("keydown", (e) => { if (e.key === "Enter") connect(); });
  $("try").addEventListener("click", tryIt);
  $("revoke").addEventListener("click", revoke);
})();
