// scepline console: progressive enhancement only; every page works without it.
// - The dashboard (body[data-refresh]) reloads itself every N seconds while the
//   tab is visible, with a switch to stop it.
// - Times rendered in UTC get a tooltip with the browser's local time.
(function () {
  "use strict";

  function localTimes() {
    var cells = document.querySelectorAll("td, dd, p");
    var utc = /(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) UTC/;
    cells.forEach(function (cell) {
      var found = utc.exec(cell.textContent);
      if (found && !cell.title) {
        var at = new Date(found[1] + "T" + found[2] + "Z");
        if (!isNaN(at)) { cell.title = "local time: " + at.toLocaleString(); }
      }
    });
  }

  function autoRefresh() {
    var seconds = parseInt(document.body.dataset.refresh || "", 10);
    if (!seconds) { return; }
    var stopped = sessionStorage.getItem("scepline-refresh") === "off";
    var heading = document.querySelector("main h1");
    if (heading) {
      var label = document.createElement("label");
      label.className = "note";
      var box = document.createElement("input");
      box.type = "checkbox";
      box.checked = !stopped;
      box.addEventListener("change", function () {
        sessionStorage.setItem("scepline-refresh", box.checked ? "on" : "off");
        stopped = !box.checked;
      });
      label.appendChild(box);
      label.appendChild(document.createTextNode(" refresh every " + seconds + " s"));
      heading.appendChild(document.createTextNode(" "));
      heading.appendChild(label);
    }
    window.setInterval(function () {
      if (!stopped && document.visibilityState === "visible") { window.location.reload(); }
    }, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    autoRefresh();
  });
})();
