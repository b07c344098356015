// The worklist and study pages refresh themselves; operators' buttons call the API.
"use strict";

function refreshPart(element) {
  const seconds = Number(element.dataset.refreshSeconds || 10);
  setInterval(async () => {
    try {
      const reply = await fetch(element.dataset.refreshUrl, { credentials: "same-origin" });
      if (reply.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
      if (reply.ok) { element.innerHTML = await reply.text(); }
    } catch (error) { /* the node may be restarting: try again next time */ }
  }, seconds * 1000);
}

function reloadPage(element) {
  const seconds = Number(element.dataset.reloadSeconds || 10);
  setTimeout(() => { if (!document.querySelector(":focus")) { location.reload(); } else { reloadPage(element); } },
             seconds * 1000);
}

async function act(button) {
  if (button.dataset.confirm && !confirm(button.dataset.confirm)) { return; }
  const out = document.getElementById("action-result");
  const reply = await fetch(button.dataset.action, {
    method: "POST", credentials: "same-origin", headers: { "X-Dermnode-Action": "1" },
  });
  const body = await reply.json().catch(() => ({}));
  if (out) { out.textContent = reply.ok ? "done" : (body.detail || reply.statusText); }
  if (reply.ok) { setTimeout(() => location.reload(), 500); }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh-url]").forEach(refreshPart);
  document.querySelectorAll("[data-reload-seconds]").forEach(reloadPage);
  document.querySelectorAll("button[data-action]").forEach((button) => button.addEventListener("click", () => act(button)));
});
