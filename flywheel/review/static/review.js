// Review dashboard: decisions without a page reload, and keyboard shortcuts.
// No inline scripts anywhere (the Content-Security-Policy forbids them); server text is only
// ever put on the page through textContent, never innerHTML.
(() => {
  "use strict";
  const cards = () => Array.from(document.querySelectorAll("article.card"));
  const pending = () => cards().filter((c) => !c.classList.contains("done") && c.querySelector("form.decide"));
  let cur = -1;

  function focusCard(i) {
    const cs = cards();
    if (!cs.length) return;
    cur = Math.max(0, Math.min(i, cs.length - 1));
    cs.forEach((c) => c.classList.remove("focus"));
    cs[cur].classList.add("focus");
    cs[cur].focus({ preventScroll: true });
    cs[cur].scrollIntoView({ block: "nearest" });
  }

  function nextPending() {
    const cs = cards();
    const rest = pending();
    if (!rest.length) {
      const more = document.getElementById("next-page");
      const summary = document.querySelector(".summary");
      if (summary && !document.getElementById("page-done")) {
        const p = document.createElement("p");
        p.id = "page-done";
        p.className = "note";
        p.textContent = "All items on this page are decided. Press n or reload for more.";
        summary.after(p);
      }
      return;
    }
    const after = rest.find((c) => cs.indexOf(c) > cur) || rest[0];
    focusCard(cs.indexOf(after));
  }

  function fmt(ts) {
    return new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  async function decide(form, decision) {
    const card = form.closest("article.card");
    const out = form.querySelector(".result");
    const fd = new FormData(form);
    fd.set("decision", decision);
    form.querySelectorAll("button").forEach((b) => (b.disabled = true));
    let res, data = {};
    try {
      res = await fetch(form.action, { method: "POST", body: fd, credentials: "same-origin",
                                       headers: { "X-Requested-With": "fetch" } });
      data = await res.json().catch(() => ({}));
    } catch (e) {
      out.textContent = "network error; try again";
      form.querySelectorAll("button").forEach((b) => (b.disabled = false));
      return;
    }
    if (res.ok) {
      card.classList.add("done", data.status);
      out.textContent = data.status + (data.repeated ? " (already saved)" : "");
      bumpCount(-1);
      offerUndo(card);
      nextPending();
    } else if (res.status === 409 && data.decided_by) {
      card.classList.add("done", "conflict");
      out.textContent = "already " + data.decision + " by " + data.decided_by + " at " + fmt(data.decided_at);
      nextPending();
    } else {
      out.textContent = data.detail || "error " + res.status + "; reload the page";
      form.querySelectorAll("button").forEach((b) => (b.disabled = false));
    }
  }

  function bumpCount(d) {
    const n = document.getElementById("pending-count");
    if (n && /^\d+$/.test(n.textContent)) n.textContent = String(Math.max(0, Number(n.textContent) + d));
  }

  // One's own decision can be taken back for a short window (the server enforces it too).
  function offerUndo(card) {
    const f = card.querySelector("form.undo");
    if (!f) return;
    f.hidden = false;
    clearTimeout(f._timer);
    f._timer = setTimeout(() => { f.hidden = true; }, Number(f.dataset.seconds || 60) * 1000);
  }

  async function undo(f) {
    const card = f.closest("article.card");
    const out = card.querySelector("form.decide .result");
    let res, data = {};
    try {
      res = await fetch(f.action, { method: "POST", body: new FormData(f), credentials: "same-origin",
                                    headers: { "X-Requested-With": "fetch" } });
      data = await res.json().catch(() => ({}));
    } catch (e) { if (out) out.textContent = "network error; try again"; return; }
    if (!res.ok) { if (out) out.textContent = data.detail || "error " + res.status; f.hidden = true; return; }
    f.hidden = true;
    card.classList.remove("done", "approved", "rejected", "conflict");
    const form = card.querySelector("form.decide");
    if (form) {
      const v = form.querySelector("input[name=version]");
      if (v) v.value = String(data.version);
      form.querySelectorAll("button").forEach((b) => (b.disabled = false));
    }
    if (out) out.textContent = "undone: pending again";
    bumpCount(1);
    focusCard(cards().indexOf(card));
  }

  function enlarge(a) {
    const card = a.closest("article.card");
    const img = a.querySelector("img");
    const shown = card.querySelector(".thumb .shown");
    const on = card.classList.toggle("enlarged");
    if (on && img.dataset.full && img.getAttribute("src") !== img.dataset.full) {
      img.dataset.small = img.getAttribute("src");
      img.removeAttribute("width");
      img.addEventListener("load", () => {
        if (shown && card.classList.contains("enlarged")) shown.textContent = "shown at " + img.naturalWidth + " × " + img.naturalHeight + " px (real size)";
      }, { once: true });
      img.src = img.dataset.full;
    } else if (!on && img.dataset.small) {
      img.src = img.dataset.small;
      img.setAttribute("width", "240");
      if (shown) shown.textContent = "";
    }
  }

  document.addEventListener("click", (ev) => {
    const a = ev.target.closest && ev.target.closest("a.enlarge");
    if (a) { ev.preventDefault(); enlarge(a); }
  });

  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (form.matches("form.undo")) { ev.preventDefault(); undo(form); return; }
    if (!form.matches("form.decide") || !/\/decide$/.test(form.getAttribute("action"))) return;
    ev.preventDefault();
    const decision = ev.submitter ? ev.submitter.value : "approved";
    decide(form, decision);
  });

  document.addEventListener("click", (ev) => {
    const card = ev.target.closest && ev.target.closest("article.card");
    if (card) { cur = cards().indexOf(card); cards().forEach((c) => c.classList.toggle("focus", c === card)); }
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target.matches && ev.target.matches("input, textarea, select")) return;
    const cs = cards();
    if (!cs.length) return;
    if (cur < 0) { const p = pending(); cur = p.length ? cs.indexOf(p[0]) : 0; }
    const card = cs[cur];
    const form = card && card.querySelector("form.decide");
    const key = ev.key;
    if (key === "j") { focusCard(cur + 1); ev.preventDefault(); }
    else if (key === "k") { focusCard(cur - 1); ev.preventDefault(); }
    else if (key === "u") { const f = card && card.querySelector("form.undo"); if (f && !f.hidden) { undo(f); ev.preventDefault(); } }
    else if (key === "n") { const more = document.getElementById("next-page"); if (more) location.href = more.href; else location.reload(); }
    else if ((key === "a" || key === "r") && form && !card.classList.contains("done")) {
      const btn = form.querySelector(key === "a" ? "button[value=approved]" : "button[value=rejected]");
      if (btn && !btn.disabled) { form.requestSubmit(btn); ev.preventDefault(); }
    } else if (/^[1-9]$/.test(key) && form) {
      const sel = form.querySelector("select[name=reason]");
      const opts = sel ? sel.querySelectorAll("optgroup[label=reject] option") : [];
      const opt = opts[Number(key) - 1];
      if (opt) { sel.value = opt.value; ev.preventDefault(); }
    }
  });

  document.addEventListener("DOMContentLoaded", () => { if (pending().length) nextPending(); });
})();
