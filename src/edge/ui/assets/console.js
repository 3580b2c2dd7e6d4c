// The console's one script (progressive enhancement: every page works without it).
// 1. <time datetime> shown in the operator's local zone; UTC stays in the title.
// 2. The overview's live part follows the server's snapshot over SSE, closed while the
//    tab is hidden and reopened when it shows again.
"use strict";
(function () {
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) { return; }
      el.textContent = d.toLocaleString();
      el.title = "UTC " + d.toISOString().replace(".000Z", "Z");
    });
  }
  function follow(live) {
    var source = null;
    function open() {
      if (source || document.hidden) { return; }
      source = new EventSource("/events");
      source.addEventListener("live", function (e) {
        var next = document.createElement("div");
        next.innerHTML = e.data;
        localTimes(next);
        live.replaceChildren.apply(live, Array.prototype.slice.call(next.childNodes));
      });
      source.onerror = function () {
        // The browser retries by itself; a signed-out session ends in a page reload.
        if (source && source.readyState === EventSource.CLOSED) { source = null; }
      };
    }
    function close() { if (source) { source.close(); source = null; } }
    document.addEventListener("visibilitychange", function () { if (document.hidden) { close(); } else { open(); } });
    open();
  }
  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var live = document.getElementById("live");
    if (live) { follow(live); }
  });
})();
