/* Console: refreshes the dashboard's sections in place (no full reload). Served by the
   gateway itself; the pages work without it (a reload link is shown instead). */
(function () {
  "use strict";
  var root = document.querySelector("[data-refresh-url]");
  if (!root || !window.fetch || !window.DOMParser) {
    return;
  }
  var url = root.getAttribute("data-refresh-url");
  var every = Math.max(2, Number(root.getAttribute("data-refresh-every")) || 5) * 1000;
  var failure = document.getElementById("refresh-error");
  var busy = false;

  Array.prototype.forEach.call(document.querySelectorAll(".js-only"), function (el) {
    el.hidden = false;
  });

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    Array.prototype.forEach.call(fresh.body.children, function (element) {
      var current = element.id && document.getElementById(element.id);
      // Leave a section alone while the keyboard focus is inside it.
      if (current && !current.contains(document.activeElement)) {
        current.replaceWith(document.importNode(element, true));
      }
    });
  }

  function refresh() {
    if (busy || document.hidden) {
      return;
    }
    busy = true;
    fetch(url, { credentials: "same-origin", cache: "no-store",
                 headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 403) {
          window.location.reload();  // the session ended: the page itself leads to the login
          throw new Error("session ended");
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        swap(html);
        if (failure) { failure.hidden = true; }
      })
      .catch(function () {
        if (failure) { failure.hidden = false; }
      })
      .then(function () { busy = false; });
  }

  window.setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
}());
