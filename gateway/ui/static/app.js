// The saga explorer's only script, served from the gateway (the pages' Content-Security-
// Policy allows no other). It refreshes the live parts of a page, and sends retry and
// cancel to the admin routes with the admin token kept in this tab's sessionStorage.
// Everything it inserts is HTML the server rendered (and escaped), or plain text.
"use strict";

(function () {
  const TOKEN_KEY = "saga-admin-token";
  const live = { paused: false, busy: false };

  function statusLine(text) {
    const el = document.getElementById("live-status");
    if (el) el.textContent = text;
  }

  function parseFragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    return template.content;
  }

  // ---- the list: rows keyed by saga id, merged in place ---------------------------------

  function mergeRows(tbody, fragment) {
    const incoming = Array.from(fragment.querySelectorAll("tr[data-id]"));
    const byId = new Map();
    for (const tr of tbody.querySelectorAll("tr[data-id]")) byId.set(tr.dataset.id, tr);
    const prepend = tbody.dataset.prepend === "yes";
    const seen = new Set();
    let oldest = Infinity;
    let added = 0;
    let anchor = tbody.querySelector("tr[data-id]:not(.empty)");
    for (const tr of incoming) {
      const id = tr.dataset.id;
      seen.add(id);
      if (id === "") continue; // the "nothing matches" row
      oldest = Math.min(oldest, Number(tr.dataset.created));
      const mine = byId.get(id);
      if (mine) {
        if (mine.dataset.updated !== tr.dataset.updated) {
          tr.classList.add("fresh");
          mine.replaceWith(tr);
        }
      } else if (prepend) {
        // Newer than anything shown: above the first row the page had. The browser's
        // scroll anchoring keeps the operator's view where it was.
        tr.classList.add("fresh");
        tbody.insertBefore(tr, anchor);
        added += 1;
      }
    }
    if (seen.size > 0 && !(seen.size === 1 && seen.has(""))) {
      const empty = tbody.querySelector("tr.empty");
      if (empty) empty.remove();
    }
    // A row in the window the server just read, but not in its answer, no longer matches
    // the filters (it finished, say): dimmed, not removed, so nothing jumps.
    for (const [id, tr] of byId) {
      if (!seen.has(id) && id !== "" && Number(tr.dataset.created) >= oldest) {
        tr.classList.add("gone");
        tr.title = "no longer matches the filters";
      }
    }
    return added;
  }

  // ---- polling ---------------------------------------------------------------------------

  let newSinceLoad = 0;

  async function refresh(el) {
    const url = el.dataset.live;
    const resp = await fetch(url, {
      headers: { "X-Fragment": "live" },
      cache: "no-store",
      credentials: "same-origin",
    });
    if (!resp.ok) {
      statusLine(`refresh failed: HTTP ${resp.status}; retrying`);
      return true;
    }
    const fragment = parseFragment(await resp.text());
    if (el.tagName === "TBODY") {
      newSinceLoad += mergeRows(el, fragment);
    } else {
      el.replaceChildren(fragment);
    }
    const now = new Date().toISOString().slice(11, 19);
    statusLine(`live · updated ${now} UTC` + (newSinceLoad ? ` · ${newSinceLoad} new since the page opened` : ""));
    return !el.querySelector("[data-final]");
  }

  function selecting(el) {
    const sel = window.getSelection();
    return sel && !sel.isCollapsed && el.contains(sel.anchorNode);
  }

  function poll(el) {
    const every = Number(el.dataset.interval || "0");
    if (!every) return;
    let stopped = false;
    const tick = async () => {
      if (stopped) return;
      const dialog = document.querySelector("dialog[open]");
      if (!live.paused && !document.hidden && !dialog && !selecting(el) && !live.busy) {
        live.busy = true;
        try {
          stopped = !(await refresh(el));
          if (stopped) statusLine("finished: no more updates");
        } catch (err) {
          statusLine("refresh failed (the gateway did not answer); retrying");
        } finally {
          live.busy = false;
        }
      }
      if (!stopped) setTimeout(tick, every);
    };
    if (el.querySelector("[data-final]")) {
      statusLine("finished: no more updates");
      return;
    }
    statusLine("live");
    setTimeout(tick, every);
  }

  // ---- actions ---------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function showTokenState() {
    const has = token() !== null;
    for (const el of document.querySelectorAll("[data-forget-token]")) el.hidden = !has;
    for (const el of document.querySelectorAll("[data-token-state]")) {
      el.textContent = has
        ? "Actions are unlocked in this tab (the admin token is kept until the tab closes)."
        : "Read-only until you give the admin token: it is asked once, kept in this tab only.";
    }
  }

  async function checkToken(candidate) {
    const resp = await fetch("/ui/session", {
      headers: { Authorization: `Bearer ${candidate}` },
      cache: "no-store",
    });
    if (resp.status === 204) return null;
    try {
      return (await resp.json()).message || `HTTP ${resp.status}`;
    } catch (err) {
      return `HTTP ${resp.status}`;
    }
  }

  function result(text, ok) {
    const el = document.getElementById("action-result");
    if (!el) return;
    el.textContent = text;
    el.className = ok ? "ok" : "bad";
  }

  function openConfirm(button) {
    const dialog = document.getElementById("confirm");
    const verb = button.dataset.action;
    const allowed = button.dataset.allowed === "yes";
    const title = document.getElementById("confirm-title");
    const text = document.getElementById("confirm-text");
    const field = document.getElementById("token-field");
    const input = document.getElementById("token-input");
    const error = document.getElementById("confirm-error");
    const go = document.getElementById("confirm-go");
    title.textContent = `${verb === "cancel" ? "Cancel" : "Retry"} saga ${button.dataset.saga}?`;
    text.textContent = button.dataset.preview;
    error.textContent = "";
    input.value = "";
    field.hidden = !allowed || token() !== null;
    go.hidden = !allowed;
    go.textContent = verb === "cancel" ? "Cancel the saga" : "Retry the saga";
    go.className = verb === "cancel" ? "danger" : "primary";
    go.disabled = false;
    dialog.dataset.url = button.dataset.url;
    dialog.dataset.verb = verb;
    dialog.showModal();
    (field.hidden ? document.getElementById("confirm-cancel") : input).focus();
  }

  async function confirmed(event) {
    event.preventDefault();
    const dialog = document.getElementById("confirm");
    const error = document.getElementById("confirm-error");
    const go = document.getElementById("confirm-go");
    const field = document.getElementById("token-field");
    go.disabled = true;
    try {
      if (!field.hidden) {
        const candidate = document.getElementById("token-input").value.trim();
        if (!candidate) {
          error.textContent = "Give the admin token (SAGA_ADMIN_TOKEN) to act.";
          return;
        }
        if (!/^[\x20-\x7e\xa0-\xff]+$/.test(candidate)) {
          // fetch() refuses such a header: it could never match what the gateway expects
          error.textContent = "That is not a token an HTTP header can carry.";
          return;
        }
        const problem = await checkToken(candidate);
        if (problem !== null) {
          error.textContent = `The token was not accepted: ${problem}`;
          return;
        }
        sessionStorage.setItem(TOKEN_KEY, candidate);
        showTokenState();
      }
      const resp = await fetch(dialog.dataset.url, {
        method: "POST",
        headers: { Authorization: `Bearer ${token()}` },
        cache: "no-store",
      });
      let body = {};
      try {
        body = await resp.json();
      } catch (err) {
        body = {};
      }
      if (resp.status === 401 || resp.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        showTokenState();
        field.hidden = false;
        error.textContent = `Refused: ${body.message || resp.status}. Give the token again.`;
        return;
      }
      dialog.close();
      if (resp.status === 202) {
        const past = dialog.dataset.verb === "cancel" ? "cancelled" : "retried";
        result(`Done: the saga was ${past}; it is ${body.status} now, and a runner drives it on.`, true);
      } else {
        result(`Refused (${resp.status}): ${body.message || "no reason given"}`, false);
      }
      const el = document.getElementById("saga-live");
      if (el) await refresh(el);
    } catch (err) {
      error.textContent = "The gateway did not answer; nothing is known to have changed.";
    } finally {
      go.disabled = false;
    }
  }

  // ---- wiring ----------------------------------------------------------------------------

  document.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    if (!target) return;
    if (target.dataset.action) {
      openConfirm(target);
    } else if (target.hasAttribute("data-forget-token")) {
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenState();
      result("The admin token is forgotten in this tab.", true);
    } else if (target.dataset.copy) {
      const source = document.querySelector(target.dataset.copy);
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.textContent).then(
          () => { target.textContent = "copied"; },
          () => { target.textContent = "select and copy"; },
        );
      }
    } else if (target.id === "confirm-cancel") {
      document.getElementById("confirm").close();
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("confirm-form");
    if (form) form.addEventListener("submit", confirmed);
    for (const toggle of document.querySelectorAll("[data-live-toggle]")) {
      toggle.addEventListener("change", () => {
        live.paused = !toggle.checked;
        statusLine(live.paused ? "paused" : "live");
      });
    }
    for (const el of document.querySelectorAll("[data-live]")) poll(el);
    showTokenState();
  });
})();
