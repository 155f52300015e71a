// hpc-registry web UI: copy buttons, live SIF status, live admin counters, script upload.
// Served from /ui/assets/ui.js (the CSP allows no inline script). Works without it: every
// page is complete as the server renders it.
"use strict";

function copyFrom(button) {
  const input = document.getElementById(button.dataset.copy);
  if (!input) return;
  const done = () => {
    input.dataset.copied = "true";
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(input.value).then(done, () => {
      input.select();
      if (document.execCommand("copy")) done();
    });
  } else {
    input.select();
    if (document.execCommand("copy")) done();
  }
}

function pollStatus(box) {
  const url = box.dataset.statusUrl;
  const tick = () => {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((s) => {
        box.innerHTML = s.html; // rendered and escaped by the server
        box.dataset.state = s.state;
        if (s.state === "queued" || s.state === "building") {
          setTimeout(tick, 2000);
        }
      })
      .catch(() => setTimeout(tick, 5000));
  };
  tick();
}

function pollCounters(box) {
  const url = box.dataset.countersUrl;
  const tick = () => {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((c) => {
        box.querySelectorAll("[data-counter]").forEach((el) => {
          let v = c;
          el.dataset.counter.split(".").forEach((k) => { v = v == null ? v : v[k]; });
          if (v != null) el.textContent = String(v);
        });
      })
      .catch(() => {})
      .finally(() => setTimeout(tick, 5000));
  };
  setTimeout(tick, 5000);
}

function fillFromFile(input) {
  const target = document.getElementById(input.dataset.fill);
  const file = input.files && input.files[0];
  if (!target || !file) return;
  const reader = new FileReader();
  reader.onload = () => { target.value = String(reader.result); };
  reader.readAsText(file);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-copy]").forEach((b) => {
    b.addEventListener("click", () => copyFrom(b));
  });
  const sif = document.getElementById("sif");
  if (sif && sif.dataset.statusUrl) {
    sif.dataset.state = sif.querySelector("#sif-state")?.textContent || "";
    if (sif.dataset.live === "true") setTimeout(() => pollStatus(sif), 2000);
  }
  const counters = document.getElementById("counters");
  if (counters && counters.dataset.countersUrl) pollCounters(counters);
  document.querySelectorAll("input[type=file][data-fill]").forEach((i) => {
    i.addEventListener("change", () => fillFromFile(i));
  });
});
