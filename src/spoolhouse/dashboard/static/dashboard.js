// Spoolhouse dashboard: live refresh of [data-live] fragments, "select all".
// No library, no build step. Served from the package; the page's CSP allows
// only scripts from the dashboard itself.
(function () {
  "use strict";

  var body = document.body;
  var seconds = parseFloat(body.getAttribute("data-refresh") || "0");
  var toggle = document.getElementById("live-toggle");
  var KEY = "spoolhouse-live";

  if (toggle) {
    try {
      toggle.checked = window.localStorage.getItem(KEY) !== "off";
      toggle.addEventListener("change", function () {
        window.localStorage.setItem(KEY, toggle.checked ? "on" : "off");
      });
    } catch (e) { /* storage disabled: keep the default */ }
  }

  function refresh(box) {
    var url = box.getAttribute("data-live");
    if (!url || box.getAttribute("data-busy")) { return; }
    box.setAttribute("data-busy", "1");
    fetch(url, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        // Server-rendered, autoescaped HTML from the dashboard's own origin.
        box.innerHTML = html;
        box.removeAttribute("data-stale");
        if (box.querySelector("[data-final]")) { box.removeAttribute("data-live"); }
        box.dispatchEvent(new CustomEvent("spoolhouse:refreshed", {bubbles: true}));
      })
      .catch(function () { box.setAttribute("data-stale", "1"); })
      .then(function () { box.removeAttribute("data-busy"); });
  }

  function tick() {
    if (document.hidden || (toggle && !toggle.checked)) { return; }
    var boxes = document.querySelectorAll("[data-live]");
    for (var i = 0; i < boxes.length; i++) { refresh(boxes[i]); }
  }

  if (seconds > 0) { window.setInterval(tick, seconds * 1000); }

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.hasAttribute || !box.hasAttribute("data-select-all")) { return; }
    var form = box.form || document;
    var items = form.querySelectorAll("input[type=checkbox][name=job_id]");
    for (var i = 0; i < items.length; i++) { items[i].checked = box.checked; }
  });
})();
