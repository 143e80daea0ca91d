// Keeps the parts of a page marked data-live="<ms>" current: the page is
// fetched again (same origin, same session) and each live part replaced by
// its new version. Without JavaScript the pages refresh themselves instead.
(function () {
  "use strict";
  function refresh(el) {
    var every = parseInt(el.getAttribute("data-live"), 10) || 2000;
    setTimeout(function () {
      if (document.hidden) { refresh(el); return; }
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) { refresh(el); return; }
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById(el.id);
          if (!fresh) { return; }
          el.replaceWith(fresh);
          if (fresh.hasAttribute("data-live")) { refresh(fresh); }
        })
        .catch(function () { refresh(el); });
    }, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-live][id]");
    for (var i = 0; i < live.length; i++) { refresh(live[i]); }
  });
})();
