// Live updates for a saga's page: follow the console's event stream and reload the page when
// the saga changes, unless the operator is typing (then say so and let them reload).
// Without JavaScript the page refreshes itself every 10 s instead (a <noscript> meta refresh).
(function () {
  "use strict";
  var root = document.getElementById("saga");
  if (!root || !window.EventSource || root.dataset.final === "true") return;
  var shown = root.dataset.version;
  var source = new EventSource("/console/sagas/" + encodeURIComponent(root.dataset.saga) + "/live");
  function typing() {
    var fields = document.querySelectorAll("input[name=reason]");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== "" || fields[i] === document.activeElement) return true;
    }
    return false;
  }
  source.addEventListener("version", function (event) {
    if (event.data === shown) return;
    if (!typing()) { source.close(); window.location.reload(); return; }
    var live = document.getElementById("live");
    live.hidden = false;
    live.textContent = "This saga has changed since the page was drawn. ";
    var link = document.createElement("a");
    link.href = window.location.pathname;
    link.textContent = "Reload";
    live.appendChild(link);
  });
})();
